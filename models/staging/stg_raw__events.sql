-- Behavioural events as they stood at the tick's as_of. The typing, deduplication and parsing
-- happen once per event in base_raw__events (incremental); events after as_of have not happened
-- yet for this tick (clock skew, or a replayed tick) and stay out.
with

events as (

    select * from {{ ref('base_raw__events') }}

),

final as (

    select
        event_id,
        customer_id,
        event_name,
        occurred_at,
        has_valid_properties,
        cart_id,
        order_id,
        product_id,
        product_name,
        price,
        has_valid_price,
        quantity,
        has_valid_quantity,
        revenue,
        currency,
        url,
        image_url,
        properties
    from events
    where occurred_at <= {{ as_of() }}

)

select * from final
