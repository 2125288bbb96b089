with

activity as (

    select * from {{ ref('int_customers__activity') }}

),

-- Every customer who ever ordered enters a lapse when their latest event of any kind is old
-- enough. The lapse is identified by that latest event, so a customer who comes back and lapses
-- again gets a new trigger_key and qualifies again.
final as (

    select
        'inactivity' as trigger,
        customer_id || ':' || strftime(last_event_at at time zone 'UTC', '%Y%m%dT%H%M%S')
            as trigger_key,
        customer_id,
        last_event_at as entered_at,
        last_event_at + to_days({{ var('inactivity_days') }}) as due_at,
        last_event_at
        + to_days({{ var('inactivity_days') }})
        + to_days({{ var('inactivity_grace_days') }}) as expires_at,
        last_event_at,
        last_order_at,
        order_count,
        lifetime_revenue,
        '{{ var("shop_url") }}' as shop_url
    from activity
    where order_count > 0

)

select * from final
