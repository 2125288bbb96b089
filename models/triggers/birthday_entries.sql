with

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

-- The birthday that matters is the one around as_of in the customer's own calendar, so the local
-- year of as_of and its neighbours are enough (they cover a window that crosses New Year).
local_years as (

    select
        customer_id,
        timezone,
        birthday,
        unnest([
            local_year - 1,
            local_year,
            local_year + 1
        ]) as celebration_year
    from (
        select
            *,
            year(timezone(timezone, {{ as_of() }})) as local_year
        from customers
        where birthday is not null
    )

),

-- 29 February births are celebrated on 28 February in non-leap years.
celebrations as (

    select
        *,
        case
            when
                month(birthday) = 2
                and day(birthday) = 29
                and not (
                    celebration_year % 4 = 0
                    and (celebration_year % 100 != 0 or celebration_year % 400 = 0)
                )
                then make_date(celebration_year, 2, 28)
            else make_date(celebration_year, month(birthday), day(birthday))
        end as celebration_date
    from local_years

),

final as (

    select
        'birthday' as trigger,
        customer_id || ':' || celebration_year as trigger_key,
        customer_id,
        -- Local wall-clock times converted to instants in the customer's time zone.
        timezone(timezone, celebration_date::timestamp) as entered_at,
        timezone(
            timezone,
            celebration_date::timestamp + to_hours({{ var('birthday_local_hour') }})
        ) as due_at,
        timezone(timezone, (celebration_date + 1)::timestamp) as expires_at,
        celebration_date,
        celebration_year
    from celebrations

)

select * from final
