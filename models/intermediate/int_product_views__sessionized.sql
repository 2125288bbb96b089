{{
    config(
        materialized='incremental',
        unique_key='customer_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        pre_hook="{{ nudge_recompute_changed('customer_id') }}",
    )
}}
-- depends_on: {{ ref('base_raw__events') }} (read by the pre-hook)
with

events as (

    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() -%}
        -- Incremental (macros/incremental.sql): only the customers whose events changed, with
        -- all their events (a session, its add and its order are all the customer's).
        where customer_id in (select customer_id from {{ nudge_changed_relation() }})
    {%- endif %}

),

views as (

    select
        customer_id,
        product_id,
        event_id,
        occurred_at,
        product_name,
        price,
        currency,
        url,
        image_url
    from events
    where
        event_name = 'product_viewed'
        and product_id is not null

),

adds as (

    select
        customer_id,
        product_id,
        occurred_at as added_at
    from events
    where
        event_name = 'product_added'
        and product_id is not null

),

orders as (

    select
        customer_id,
        occurred_at as ordered_at
    from events
    where event_name = 'order_completed'

),

-- Views of one product by one customer form a browse while each comes within 24 h of the one
-- before: a second look within a day is the interest signal, a single look is not. A view with
-- no other view of the product within 24 h on either side is a browse of its own, one look: it
-- is dropped here, before numbering and grouping, which then handle only the few views that
-- make a browse (most views are single looks: grouping all of them cost most of a full build).
flagged_views as (

    select
        *,
        coalesce(
            occurred_at
            - lag(occurred_at)
                over (partition by customer_id, product_id order by occurred_at, event_id)
            > interval '24 hour',
            true
        ) as starts_browse,
        coalesce(
            lead(occurred_at)
                over (partition by customer_id, product_id order by occurred_at, event_id)
            - occurred_at
            > interval '24 hour',
            true
        ) as ends_browse
    from views

),

browsing_views as (

    select * from flagged_views
    where not (starts_browse and ends_browse)

),

numbered_views as (

    select
        *,
        sum(cast(starts_browse as integer)) over (
            partition by customer_id, product_id
            order by occurred_at, event_id
            rows between unbounded preceding and current row
        ) as browse_number
    from browsing_views

),

-- The product shown is as the latest view describes it (current name, price and picture; a
-- view without one of them leaves it to the view before).
browses as (

    select
        customer_id,
        product_id,
        browse_number,
        count(*) as view_count,
        min(occurred_at) as first_viewed_at,
        max(occurred_at) as last_viewed_at,
        {{ nudge_latest('product_name', 'occurred_at', 'event_id') }} as product_name,
        {{ nudge_latest('price', 'occurred_at', 'event_id') }} as price,
        {{ nudge_latest('currency', 'occurred_at', 'event_id') }} as currency,
        {{ nudge_latest('url', 'occurred_at', 'event_id') }} as url,
        {{ nudge_latest('image_url', 'occurred_at', 'event_id') }} as image_url
    from numbered_views
    group by customer_id, product_id, browse_number

),

-- The first add of the product and the first order of anything since the browse began.
final as (

    select
        browses.*,
        adds.added_at,
        orders.ordered_at,
        {{ as_of() }} as computed_as_of
    from browses
    {{ nudge_join_first_at('adds', 'adds', 'added_at', on='''
        browses.customer_id = adds.customer_id
        and browses.product_id = adds.product_id
        and browses.first_viewed_at <= adds.added_at''') }}
    {{ nudge_join_first_at('orders', 'orders', 'ordered_at', on='''
        browses.customer_id = orders.customer_id
        and browses.first_viewed_at <= orders.ordered_at''') }}

)

select * from final
