-- Baskets the demo's shoppers already bought, for the orders they place after an email. The
-- demo plants malformed rows on purpose: only valid JSON with a products list is reused.
with

orders as (

    select
        event_id,
        properties
    from raw.events
    where event_name = 'order_completed' and json_valid(properties)

),

final as (

    select
        event_id,
        json_extract(properties, '$.products') as products,
        try_cast(json_extract_string(properties, '$.revenue') as double) as revenue
    from orders
    where json_type(json_extract(properties, '$.products')) = 'ARRAY'

)

select
    products,
    revenue
from final
order by event_id
limit 500
