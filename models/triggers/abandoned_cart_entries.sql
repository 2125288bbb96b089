with

carts as (

    select * from {{ ref('int_carts__summarized') }}

),

activity as (

    select * from {{ ref('int_customers__activity') }}

),

-- Abandoned: something is still in the cart, no order carries the cart id, and the customer has
-- not ordered since touching the cart (an order through another cart counts as converting).
abandoned as (

    select carts.*
    from carts
    left join activity
        on carts.customer_id = activity.customer_id
    where
        carts.item_count > 0
        and not carts.is_ordered
        and (activity.last_order_at is null or activity.last_order_at < carts.last_activity_at)

),

final as (

    select
        'abandoned_cart' as trigger,
        cart_id as trigger_key,
        customer_id,
        last_activity_at as entered_at,
        last_activity_at
        + to_hours({{ var('abandoned_cart_delay_hours') }}) as due_at,
        last_activity_at
        + to_hours({{ var('abandoned_cart_delay_hours') }})
        + to_hours({{ var('abandoned_cart_grace_hours') }}) as expires_at,
        cart_id,
        items,
        item_count,
        cart_value,
        currency,
        '{{ var("shop_url") }}/cart/' || cart_id as cart_url
    from abandoned

)

select * from final
