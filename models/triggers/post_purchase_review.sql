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

-- A review is asked for once the customer has had the products for a while: from the delivery
-- when the shop sends order_delivered, else from the order (delivery time unknown). A delivery
-- arriving later moves the request later, which is fine: it is not due before 10 days.
reviews as (

    select
        orders.*,
        deliveries.delivered_at,
        coalesce(deliveries.delivered_at, orders.ordered_at) as review_from
    from orders
    left join deliveries
        on orders.order_id = deliveries.order_id
    -- Only the orders whose request can touch this tick (nudge_entry_window, in
    -- macros/sequence.sql): the engine would drop the others.
    where
        {{ nudge_entry_window('post_purchase_review',
            'coalesce(deliveries.delivered_at, orders.ordered_at)') }}

),

{{ nudge_product_picks_cte('select reviews.customer_id from reviews') }},

final as (

    select
        reviews.order_id as trigger_key,
        reviews.customer_id,
        reviews.review_from as entered_at,
        reviews.order_id,
        reviews.ordered_at,
        reviews.delivered_at,
        reviews.items,
        reviews.item_count,
        reviews.invalid_item_count,
        -- Every product the order lists has a price or quantity that is not a number: the engine
        -- excludes the entry with this reason.
        case
            when reviews.invalid_item_count > 0 and reviews.item_count = 0
                then 'invalid_items'
        end as entry_exclusion_reason,
        '{{ var("shop_url") }}/review/'
        || {{ nudge_url_segment('reviews.order_id') }} as review_url,
        coalesce(picks.recommended_products, {{ nudge_no_records() }}) as recommended_products,
        '{{ var("shop_url") }}' as shop_url
    from reviews
    left join picks
        on reviews.customer_id = picks.customer_id

)

select * from final
