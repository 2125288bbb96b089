-- One order of the demo's shoppers, once: a rerun of the same tick finds it there already.
-- Parameters: $event_id, $customer_id, $occurred_at, $properties.
insert into raw.events (event_id, customer_id, event_name, occurred_at, properties)
select
    $event_id as order_event_id,
    $customer_id as order_customer_id,
    'order_completed' as order_event_name,
    $occurred_at as order_occurred_at,
    $properties as order_properties
where
    not exists (
        select 1 from raw.events as known
        where known.event_id = $event_id
    )
