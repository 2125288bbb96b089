-- Behavioural events as they stood at the tick's as_of: the first copy of each (typed, ranked and
-- parsed once in base_raw__events, incremental). Events after as_of have not happened yet for this
-- tick (clock skew, or a replayed tick) and stay out.
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
    where
        is_first_copy
        and occurred_at <= {{ as_of() }}

)

select * from final
