-- Every order, confirmed once, within minutes: the transactional schedule (every 5 minutes)
-- builds this model and sends its due step, and the hourly tick is the backstop. The email
-- lists the order's valid products and its totals; an order whose products are all invalid is
-- still confirmed (a customer who paid must hear so), with the total and without the list.
with

orders as (

    select * from {{ ref('int_orders__itemized') }}
    -- Only the orders whose confirmation can touch this tick (nudge_entry_window, in
    -- macros/sequence.sql): every 5 minutes, not every order ever made.
    where {{ nudge_entry_window('order_confirmation', 'ordered_at') }}

),

-- The products' own sum, for the "subtotal" line; the order's revenue (what was charged:
-- shipping, tax and discounts included) is its total when the shop sends one.
order_items as (

    select
        order_id,
        {{ nudge_unnest('items') }} as item
    from orders

),

priced_items as (

    select
        order_items.order_id,
        {{ nudge_field('order_items.item', 'price', 'decimal(18, 2)') }} as unit_price,
        {{ nudge_field('order_items.item', 'quantity', 'integer') }} as item_quantity
    from order_items

),

subtotals as (

    select
        order_id,
        -- A product listed without a price makes the sum a guess: no subtotal line then.
        case
            when bool_and(unit_price is not null) then sum(unit_price * item_quantity)
        end as subtotal
    from priced_items
    group by order_id

),

final as (

    select
        orders.order_id as trigger_key,
        orders.customer_id,
        orders.ordered_at as entered_at,
        orders.order_id,
        orders.ordered_at,
        orders.items,
        orders.item_count,
        orders.invalid_item_count,
        subtotals.subtotal,
        coalesce(orders.revenue, subtotals.subtotal) as order_total,
        orders.currency,
        '{{ var("shop_url") }}/orders/'
        || {{ nudge_url_segment('orders.order_id') }} as order_url,
        '{{ var("shop_url") }}' as shop_url
    from orders
    left join subtotals
        on orders.order_id = subtotals.order_id

)

select * from final
