-- One email per shipment, within minutes of the shop's order_shipped event: the carrier, the
-- tracking number and a link to follow the parcel, with the order's products. A shipment is an
-- order and a tracking number, so a split order gets one email per parcel, a pipeline that
-- delivers the same event twice still gets one, and so does a parcel shipped first without its
-- number and then with it.
with

events as (

    select * from {{ ref('stg_raw__events') }}
    where event_name = 'order_shipped'

),

orders as (

    select * from {{ ref('int_orders__itemized') }}

),

-- The orders shipped within the window this tick can mail (nudge_entry_window). Every shipment
-- event of such an order is read below, even one from before the window, because whether a
-- parcel was already announced, or announced first without its number, depends on the order's
-- earlier events; an order with no event in the window cannot enter at this tick, so its
-- history is not read at all (at a million customers that history is most of the table).
windowed_orders as (

    select distinct order_id
    from events
    where
        order_id is not null
        and {{ nudge_entry_window('shipping_notification', 'occurred_at') }}

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
    where
        order_id is null
        or order_id in (select windowed_orders.order_id from windowed_orders)

),

-- The first event of a shipment wins: a retried delivery of it is not a second parcel.
first_events as (

    {{ nudge_first_per(
        'shipments', "order_id, coalesce(tracking_number, '')", 'occurred_at asc, event_id asc'
    ) }}

),

-- Shops often send order_shipped before the carrier has numbered the parcel, then again with
-- the number: that is one parcel, announced once, with its number. So a shipment without a
-- number is left out when its order has a numbered one at or after it (an email already sent
-- for it stays sent). One without a number after the order's last numbered one is another
-- parcel (a local courier), and an order shipped without any number gets its email too.
numbered_orders as (

    select
        order_id,
        max(occurred_at) as last_numbered_at
    from first_events
    where
        order_id is not null
        and coalesce(tracking_number, '') != ''
    group by order_id

),

announced as (

    select first_events.*
    from first_events
    left join numbered_orders
        on
            first_events.order_id = numbered_orders.order_id
            and first_events.occurred_at <= numbered_orders.last_numbered_at
    where
        coalesce(first_events.tracking_number, '') != ''
        or numbered_orders.order_id is null

),

final as (

    select
        coalesce(announced.order_id, announced.event_id)
        || ':' || coalesce(announced.tracking_number, '') as trigger_key,
        announced.customer_id,
        announced.occurred_at as entered_at,
        announced.order_id,
        announced.occurred_at as shipped_at,
        nullif(announced.carrier, '') as carrier,
        nullif(announced.tracking_number, '') as tracking_number,
        -- The shop's own link first; else the carrier's tracking page (var carrier_tracking_urls).
        coalesce(
            announced.tracking_url,
            {{ nudge_carrier_tracking_url('announced.carrier', 'announced.tracking_number') }}
        ) as tracking_url,
        orders.items,
        coalesce(orders.item_count, 0) as item_count,
        '{{ var("shop_url") }}/orders/'
        || {{ nudge_url_segment('announced.order_id') }} as order_url,
        '{{ var("shop_url") }}' as shop_url,
        -- Without an order id the email cannot say what shipped: excluded with this reason.
        case when announced.order_id is null then 'invalid_shipment' end
            as entry_exclusion_reason
    from announced
    left join orders
        on announced.order_id = orders.order_id
    -- Only the shipments whose email can touch this tick (nudge_entry_window, in
    -- macros/sequence.sql), after the first event of each is known.
    where {{ nudge_entry_window('shipping_notification', 'announced.occurred_at') }}

)

select * from final
