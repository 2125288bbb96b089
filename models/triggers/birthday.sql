with

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

-- The birthday that matters is the one around as_of in the customer's own calendar, so the local
-- year of as_of and its neighbours are enough (they cover a window that crosses New Year).
birthdays as (

    select
        customer_id,
        timezone,
        birthday,
        cast(extract(year from timezone(timezone, {{ as_of() }})) as integer) as local_year
    from customers
    where birthday is not null

),

local_years as (

    select
        birthdays.customer_id,
        birthdays.timezone,
        birthdays.birthday,
        birthdays.local_year + neighbours.year_shift as celebration_year
    from birthdays
    cross join (values (-1), (0), (1)) as neighbours (year_shift)

),

-- 29 February births are celebrated on 28 February in non-leap years: the birthday's day is
-- capped at the last day of its month in the celebration year.
celebrations as (

    select
        *,
        {{ nudge_day_of_month(
            'celebration_year', 'extract(month from birthday)', 'extract(day from birthday)'
        ) }} as celebration_date
    from local_years

),

-- Only the birthdays whose greeting can touch this tick (nudge_entry_dates, in
-- macros/sequence.sql), compared on dates before any time zone conversion: the engine would
-- drop the others, and building them cost a row per customer and year every hour.
around_the_tick as (

    select * from celebrations
    where {{ nudge_entry_dates('birthday', 'celebration_date') }}

),

final as (

    select
        customer_id || ':' || celebration_year as trigger_key,
        customer_id,
        -- 09:00 on the customer's wall clock. The greeting's 15 h grace in the YAML ends at local
        -- midnight (an hour off on the night clocks change), so it never arrives a day late.
        timezone(timezone, cast(celebration_date as timestamp) + interval '9 hour') as entered_at,
        celebration_date,
        celebration_year,
        '{{ var("shop_url") }}' as shop_url
    from around_the_tick

)

select * from final
