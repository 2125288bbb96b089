-- The rows of {relation} (raw.customers, a staging view or a dbt table with customer_id and
-- email) of these customers or these normalised addresses: who the person is, under which
-- ids, addresses and first names. {columns}: customer_id, email and first_name where the
-- relation has one. Parameters: $customer_ids, $emails.
select {columns}
from {relation}
where
    cast(customer_id as varchar) in (select unnest(cast($customer_ids as varchar[])))
    or lower(trim(email)) in (select unnest(cast($emails as varchar[])))
