with

events as (

    select * from {{ ref('stg_raw__events') }}

),

final as (

    select
        customer_id,
        max(occurred_at) as last_event_at,
        min(occurred_at) filter (where event_name = 'order_completed') as first_order_at,
        max(occurred_at) filter (where event_name = 'order_completed') as last_order_at,
        count(*) filter (where event_name = 'order_completed') as order_count,
        coalesce(sum(revenue) filter (where event_name = 'order_completed'), 0) as lifetime_revenue
    from events
    group by customer_id

)

select * from final
