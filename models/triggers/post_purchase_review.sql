with

orders as (

    select * from {{ ref('int_orders__itemized') }}

),

events as (

    select * from {{ ref('stg_raw__events') }}

),

deliveries as (

    select
        order_id,
        min(occurred_at) as delivered_at
    from events
    where
        event_name = 'order_delivered'
        and order_id is not null
    group by order_id

),

{{ nudge_product_picks_cte() }},

-- A review is asked for once the customer has had the products for a while: from the delivery
-- when the shop sends order_delivered, else from the order (delivery time unknown). A delivery
-- arriving later moves the request later, which is fine: it is not due before 10 days.
final as (

    select
        orders.order_id as trigger_key,
        orders.customer_id,
        coalesce(deliveries.delivered_at, orders.ordered_at) as entered_at,
        orders.order_id,
        orders.ordered_at,
        deliveries.delivered_at,
        orders.items,
        orders.item_count,
        orders.invalid_item_count,
        -- Every product the order lists has a price or quantity that is not a number: the engine
        -- excludes the entry with this reason.
        case
            when orders.invalid_item_count > 0 and orders.item_count = 0
                then 'invalid_items'
        end as entry_exclusion_reason,
        '{{ var("shop_url") }}/review/'
        || {{ nudge_url_segment('orders.order_id') }} as review_url,
        coalesce(picks.recommended_products, {{ nudge_no_records() }}) as recommended_products,
        '{{ var("shop_url") }}' as shop_url
    from orders
    left join deliveries
        on orders.order_id = deliveries.order_id
    left join picks
        on orders.customer_id = picks.customer_id
    -- Only the orders whose request can touch this tick (nudge_entry_window, in
    -- macros/sequence.sql): the engine would drop the others.
    where
        {{ nudge_entry_window('post_purchase_review',
            'coalesce(deliveries.delivered_at, orders.ordered_at)') }}

)

select * from final
