-- One email per shipment, within minutes of the shop's order_shipped event: the carrier, the
-- tracking number and a link to follow the parcel, with the order's products. A shipment is an
-- order and a tracking number, so a split order gets one email per parcel and a pipeline that
-- delivers the same event twice still gets one.
with

events as (

    select * from {{ ref('stg_raw__events') }}
    where event_name = 'order_shipped'

),

orders as (

    select * from {{ ref('int_orders__itemized') }}

),

shipments as (

    select
        event_id,
        customer_id,
        occurred_at,
        order_id,
        {{ nudge_truncate("trim(properties ->> 'carrier')", 'max_name_chars') }} as carrier,
        {{ nudge_truncate("trim(properties ->> 'tracking_number')", 'max_name_chars') }}
            as tracking_number,
        {{ nudge_web_url("trim(properties ->> 'tracking_url')") }} as tracking_url
    from events

),

-- The first event of a shipment wins: a retried delivery of it is not a second parcel.
first_events as (

    {{ nudge_first_per(
        'shipments', "order_id, coalesce(tracking_number, '')", 'occurred_at asc, event_id asc'
    ) }}

),

final as (

    select
        coalesce(first_events.order_id, first_events.event_id)
        || ':' || coalesce(first_events.tracking_number, '') as trigger_key,
        first_events.customer_id,
        first_events.occurred_at as entered_at,
        first_events.order_id,
        first_events.occurred_at as shipped_at,
        nullif(first_events.carrier, '') as carrier,
        nullif(first_events.tracking_number, '') as tracking_number,
        -- The shop's own link first; else the carrier's tracking page (var carrier_tracking_urls).
        coalesce(
            first_events.tracking_url,
            {{ nudge_carrier_tracking_url('first_events.carrier', 'first_events.tracking_number') }}
        ) as tracking_url,
        orders.items,
        coalesce(orders.item_count, 0) as item_count,
        '{{ var("shop_url") }}/orders/'
        || {{ nudge_url_segment('first_events.order_id') }} as order_url,
        '{{ var("shop_url") }}' as shop_url,
        -- Without an order id the email cannot say what shipped: excluded with this reason.
        case when first_events.order_id is null then 'invalid_shipment' end
            as entry_exclusion_reason
    from first_events
    left join orders
        on first_events.order_id = orders.order_id
    -- Only the shipments whose email can touch this tick (nudge_entry_window, in
    -- macros/sequence.sql), after the first event of each is known.
    where {{ nudge_entry_window('shipping_notification', 'first_events.occurred_at') }}

)

select * from final
