-- One order of the demo's shoppers, once: a rerun of the same tick finds it there already.
-- Parameters: $event_id, $customer_id, $occurred_at, $properties.
insert into raw.events (event_id, customer_id, event_name, occurred_at, properties)
select
    $event_id,
    $customer_id,
    'order_completed',
    $occurred_at,
    $properties,
where not exists (select 1 from raw.events where event_id = $event_id)
