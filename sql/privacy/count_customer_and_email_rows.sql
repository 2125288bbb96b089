-- How many rows of {relation} belong to these customers or carry these normalised addresses.
-- Parameters: $customer_ids, $emails.
select count(*) as row_count
from {relation}
where
    cast(customer_id as varchar) in (select unnest(cast($customer_ids as varchar[])))
    or lower(trim(email)) in (select unnest(cast($emails as varchar[])))
