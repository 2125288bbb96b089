{{
    config(
        materialized='incremental',
        unique_key='cart_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        pre_hook="{{ nudge_recompute_changed('cart_id') }}",
    )
}}
-- depends_on: {{ ref('base_raw__events') }} (read by the pre-hook)
with

events as (

    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() -%}
        -- Incremental (macros/incremental.sql): only the carts whose events changed, with
        -- all their events.
        where cart_id in (select cart_id from {{ nudge_changed_relation() }})
    {%- endif %}

),

cart_events as (

    select * from events
    where
        cart_id is not null
        and event_name in ('product_added', 'product_removed', 'cart_viewed', 'checkout_started')

),

-- A cart id seen under two customers is an upstream bug; the customer with the latest activity
-- keeps it so one cart never yields two emails.
cart_activity as (

    select
        cart_id,
        customer_id,
        occurred_at
    from cart_events

),

cart_owners as (

    {{ nudge_first_per(
        'cart_activity', 'cart_id', 'occurred_at desc nulls last, customer_id asc'
    ) }}

),

owned_cart_events as (

    select cart_events.*
    from cart_events
    inner join cart_owners
        on
            cart_events.cart_id = cart_owners.cart_id
            and cart_events.customer_id = cart_owners.customer_id

),

line_items as (

    select
        cart_id,
        product_id,
        sum(
            case
                when event_name = 'product_added' then quantity
                when event_name = 'product_removed' then -quantity
                else 0
            end
        ) as net_quantity,
        -- One add or remove whose quantity is not a number leaves the net quantity unknown.
        bool_and(coalesce(has_valid_quantity, true)) as has_valid_quantity,
        -- The latest add carries the current name and price shown to the shopper (event_id breaks
        -- a tie between two adds at the same instant).
        {{ nudge_latest(
            'product_name', 'occurred_at', 'event_id', where="event_name = 'product_added'"
        ) }} as name,
        {{ nudge_latest(
            'price', 'occurred_at', 'event_id', where="event_name = 'product_added'"
        ) }} as price,
        {{ nudge_latest(
            'has_valid_price', 'occurred_at', 'event_id', where="event_name = 'product_added'"
        ) }} as has_valid_price,
        {{ nudge_latest(
            'url', 'occurred_at', 'event_id', where="event_name = 'product_added'"
        ) }} as url,
        {{ nudge_latest(
            'image_url', 'occurred_at', 'event_id', where="event_name = 'product_added'"
        ) }} as image_url,
        {{ nudge_latest(
            'currency', 'occurred_at', 'event_id', where="event_name = 'product_added'"
        ) }} as currency
    from owned_cart_events
    where
        product_id is not null
        and event_name in ('product_added', 'product_removed')
    group by cart_id, product_id

),

-- What is still in the cart. A product whose latest price or any quantity is not a number
-- cannot be shown or totalled: it is left out of the email and only counted. One whose quantity
-- is unknown may or may not still be in the cart, so it is counted too.
cart_lines as (

    select
        *,
        coalesce(has_valid_price, true) and has_valid_quantity as is_valid
    from line_items
    where net_quantity > 0 or not has_valid_quantity

),

contents as (

    select
        cart_id,
        {{ nudge_item_records('net_quantity', 'name, product_id', where='is_valid') }} as items,
        sum(net_quantity) filter (where is_valid) as item_count,
        cast(
            sum(net_quantity * coalesce(price, 0)) filter (where is_valid) as decimal(38, 2)
        ) as cart_value,
        count(*) filter (where not is_valid) as invalid_item_count,
        max(currency) filter (where is_valid) as currency
    from cart_lines
    group by cart_id

),

activity as (

    select
        cart_id,
        min(customer_id) as customer_id,
        min(occurred_at) as started_at,
        max(occurred_at) as last_activity_at
    from owned_cart_events
    group by cart_id

),

ordered_carts as (

    select distinct cart_id
    from events
    where event_name = 'order_completed' and cart_id is not null

),

final as (

    select
        activity.cart_id,
        activity.customer_id,
        activity.started_at,
        activity.last_activity_at,
        contents.items,
        coalesce(contents.item_count, 0) as item_count,
        coalesce(contents.cart_value, 0) as cart_value,
        coalesce(contents.invalid_item_count, 0) as invalid_item_count,
        coalesce(contents.currency, 'USD') as currency,
        ordered_carts.cart_id is not null as is_ordered,
        {{ as_of() }} as computed_as_of
    from activity
    left join contents
        on activity.cart_id = contents.cart_id
    left join ordered_carts
        on activity.cart_id = ordered_carts.cart_id

)

select * from final
