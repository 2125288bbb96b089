-- Delete these customers' rows, and rows with these normalised addresses, from one dbt table
-- with an email column ({relation}). Parameters: $customer_ids, $emails.
delete from {relation}
where
    cast(customer_id as varchar) in (select unnest(cast($customer_ids as varchar[])))
    or lower(trim(email)) in (select unnest(cast($emails as varchar[])))
