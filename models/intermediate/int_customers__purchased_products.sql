{{
    config(
        materialized='incremental',
        unique_key='customer_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        pre_hook="{{ nudge_recompute_changed(
            'customer_id', also=nudge_customers_of_changed_orders()
        ) }}",
    )
}}
-- depends_on: {{ ref('base_raw__events') }} (read by the pre-hook)
-- Every product each customer has bought (order_completed items), once, with when they last
-- bought it and how the shop last described it. Product picks start here. Incremental, keyed by
-- customer: a customer's orders change only with their events, and unnesting every order's
-- items every hour was a third of a steady tick at 54M events.
with

orders as (

    select * from {{ ref('int_orders__itemized') }}
    {% if is_incremental() -%}
        -- Incremental (macros/incremental.sql): only the customers whose events changed, with
        -- all their orders.
        where customer_id in (select customer_id from {{ nudge_changed_relation() }})
    {%- endif %}

),

order_products as (

    select
        customer_id,
        order_id,
        ordered_at,
        currency,
        {{ nudge_unnest('items') }} as item,
        -- The line's place in the order: the same product on two lines, or in two orders
        -- placed at the same instant, resolves the same way on every build.
        {{ nudge_unnest_position('items') }} as line_number
    from orders
    where items is not null

),

products as (

    select
        order_products.customer_id,
        order_products.ordered_at,
        order_products.order_id || ':' || lpad(cast(order_products.line_number as varchar), 6, '0')
            as order_line,
        order_products.currency,
        {{ nudge_field('order_products.item', 'product_id', 'varchar') }} as bought_product_id,
        {{ nudge_field('order_products.item', 'name', 'varchar') }} as product_name,
        {{ nudge_field('order_products.item', 'url', 'varchar') }} as product_url,
        {{ nudge_field('order_products.item', 'image_url', 'varchar') }} as product_image_url,
        {{ nudge_field('order_products.item', 'price', 'decimal(18, 2)') }} as product_price
    from order_products

),

bought as (

    select
        customer_id,
        bought_product_id as product_id,
        max(ordered_at) as last_bought_at,
        {{ nudge_latest('product_name', 'ordered_at', 'order_line') }} as name,
        {{ nudge_latest('product_url', 'ordered_at', 'order_line') }} as url,
        {{ nudge_latest('product_image_url', 'ordered_at', 'order_line') }} as image_url,
        {{ nudge_latest('product_price', 'ordered_at', 'order_line') }} as price,
        {{ nudge_latest('currency', 'ordered_at', 'order_line') }} as currency
    from products
    where bought_product_id is not null
    group by customer_id, bought_product_id

),

final as (

    select
        *,
        -- 1 for the product the customer bought most recently: picks count each customer with
        -- their latest var product_picks_history products.
        row_number() over (
            partition by customer_id order by last_bought_at desc, product_id asc
        ) as purchase_rank,
        {{ as_of() }} as computed_as_of
    from bought

)

select * from final
