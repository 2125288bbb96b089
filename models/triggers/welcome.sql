with

events as (

    select * from {{ ref('stg_raw__events') }}

),

-- A customer re-registering (a second signed_up) is not new: the first sign-up starts the one
-- welcome series they will ever get.
signups as (

    select
        customer_id,
        min(occurred_at) as signed_up_at
    from events
    where event_name = 'signed_up'
    group by customer_id

),

orders as (

    select
        customer_id,
        occurred_at as ordered_at
    from events
    where event_name = 'order_completed'

),

-- The first order at or after sign-up ends the series: the welcome exists to get that order.
-- Orders placed before signing up (as a guest) do not count.
final as (

    select
        signups.customer_id as trigger_key,
        signups.customer_id,
        signups.signed_up_at as entered_at,
        orders.ordered_at as first_order_at,
        '{{ var("shop_url") }}' as shop_url
    from signups
    {{ nudge_join_first_at('orders', 'orders', 'ordered_at', on='''
        signups.customer_id = orders.customer_id
        and signups.signed_up_at <= orders.ordered_at''') }}
    -- Only the sign-ups whose steps can touch this tick (nudge_entry_window, in
    -- macros/sequence.sql): the engine would drop the others.
    where {{ nudge_entry_window('welcome', 'signups.signed_up_at') }}

)

select * from final
