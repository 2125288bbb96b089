-- Delete these customers' rows from one dbt table ({relation}; rebuilt by every tick).
-- Parameters: $customer_ids.
delete from {relation}
where cast(customer_id as varchar) in (select unnest(cast($customer_ids as varchar[])))
