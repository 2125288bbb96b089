with

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

-- The anniversary is of the day the customer signed up on their own calendar: 23:30 on 1 June
-- in Los Angeles is 2 June in UTC, but the customer remembers 1 June.
signups as (

    select
        customer_id,
        timezone,
        cast(timezone(timezone, created_at) as date) as signup_date,
        cast(extract(year from timezone(timezone, {{ as_of() }})) as integer) as local_year
    from customers
    where created_at is not null

),

-- As for birthdays, the anniversary around as_of is in the local year of as_of or a neighbour.
local_years as (

    select
        signups.customer_id,
        signups.timezone,
        signups.signup_date,
        signups.local_year + neighbours.year_shift as celebration_year
    from signups
    cross join (values (-1), (0), (1)) as neighbours (year_shift)

),

-- Year 0 is the sign-up itself (the welcome series covers it): the first one is a year later.
anniversary_years as (

    select * from local_years
    where celebration_year >= cast(extract(year from signup_date) as integer) + 1

),

-- Signed up on 29 February: celebrated on 28 February in non-leap years.
celebrations as (

    select
        *,
        {{ nudge_day_of_month(
            'celebration_year', 'extract(month from signup_date)', 'extract(day from signup_date)'
        ) }} as celebration_date
    from anniversary_years

),

-- Only the anniversaries whose greeting can touch this tick (nudge_entry_dates, in
-- macros/sequence.sql), compared on dates before any time zone conversion: the engine would
-- drop the others, and building them cost a row per customer and year every hour.
around_the_tick as (

    select * from celebrations
    where {{ nudge_entry_dates('signup_anniversary', 'celebration_date') }}

),

final as (

    select
        customer_id || ':' || celebration_year as trigger_key,
        customer_id,
        -- 09:00 local; the step's 15 h grace in the YAML ends at local midnight (an hour off on
        -- the night clocks change).
        timezone(timezone, cast(celebration_date as timestamp) + interval '9 hour') as entered_at,
        celebration_date,
        celebration_year,
        celebration_year - cast(extract(year from signup_date) as integer) as years,
        signup_date,
        '{{ var("shop_url") }}' as shop_url
    from around_the_tick

)

select * from final
