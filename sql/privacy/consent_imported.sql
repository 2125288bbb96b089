-- One customer's consent history from the shop (raw.subscriptions, source `import`), for a
-- warehouse whose models are not built yet. Parameters: $customer_id.
select
    lower(trim(list)) as list,
    lower(trim(status)) as status,
    cast(changed_at as timestamptz) as changed_at,
    'import' as source,
    cast(null as varchar) as send_id
from raw.subscriptions
where cast(customer_id as varchar) = $customer_id
order by changed_at desc, list asc
