{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        pre_hook="{{ nudge_recompute_changed('order_id') }}",
    )
}}
-- depends_on: {{ ref('base_raw__events') }} (read by the pre-hook)
with

events as (

    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() -%}
        -- Incremental (macros/incremental.sql): only the orders whose events changed, with
        -- all their events.
        where order_id in (select order_id from {{ nudge_changed_relation() }})
    {%- endif %}

),

-- A shop pipeline that retries delivers the same order twice under new event ids: the first
-- copy wins, so one order is one row (and one review request).
order_events as (

    select
        order_id,
        event_id,
        customer_id,
        occurred_at as ordered_at,
        cart_id,
        revenue,
        coalesce(currency, 'USD') as currency,
        -- Anything but a JSON array (a string, an object, nothing) means "no products known".
        {{ nudge_json_array("properties -> 'products'") }} as products
    from events
    where
        event_name = 'order_completed'
        and order_id is not null

),

orders as (

    {{ nudge_first_per('order_events', 'order_id', 'ordered_at asc, event_id asc') }}

),

order_products as (

    select
        order_id,
        {{ nudge_unnest('products') }} as product,
        {{ nudge_unnest_position('products') }} as product_index
    from orders

),

-- Names and URLs come straight from the shop's payload: held to the same limits as in staging.
typed_products as (

    select
        order_id,
        product_index,
        product ->> 'product_id' as product_id,
        {{ nudge_truncate("product ->> 'name'", 'max_product_name_chars') }} as name,
        {{ nudge_try_cast("product ->> 'price'", 'decimal(18, 2)') }} as price,
        -- Same default as the events' own quantity: a product listed without one was bought once.
        coalesce({{ nudge_try_cast("product ->> 'quantity'", 'integer') }}, 1) as quantity,
        -- A price or quantity present but not a number: the product is left out of the email.
        (
            product ->> 'price' is null
            or {{ nudge_try_cast("product ->> 'price'", 'decimal(18, 2)') }} is not null
        )
        and (
            product ->> 'quantity' is null
            or {{ nudge_try_cast("product ->> 'quantity'", 'integer') }} is not null
        ) as is_valid,
        {{ nudge_web_url("product ->> 'url'") }} as url,
        {{ nudge_web_url("product ->> 'image_url'") }}
            as image_url
    from order_products

),

order_items as (

    select
        order_id,
        {{ nudge_item_records('quantity', 'product_index', where='is_valid') }} as items,
        sum(quantity) filter (where is_valid) as item_count,
        count(*) filter (where not is_valid) as invalid_item_count
    from typed_products
    -- An entry that names no product cannot be shown in an email.
    where product_id is not null or name is not null
    group by order_id

),

final as (

    select
        orders.order_id,
        orders.customer_id,
        orders.ordered_at,
        orders.cart_id,
        orders.revenue,
        orders.currency,
        order_items.items,
        coalesce(order_items.item_count, 0) as item_count,
        coalesce(order_items.invalid_item_count, 0) as invalid_item_count,
        {{ as_of() }} as computed_as_of
    from orders
    left join order_items
        on orders.order_id = order_items.order_id

)

select * from final
