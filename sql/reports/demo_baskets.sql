-- Baskets the demo's shoppers already bought, for the orders they place after an email.
select
    json_extract(properties, '$.products') as products,
    try_cast(json_extract_string(properties, '$.revenue') as double) as revenue,
from raw.events
where event_name = 'order_completed' and json_extract(properties, '$.products') is not null
order by event_id
limit 500
