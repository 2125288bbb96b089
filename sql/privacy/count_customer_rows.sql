-- How many rows of {relation} belong to these customers. Parameters: $customer_ids.
select count(*) as row_count
from {relation}
where cast(customer_id as varchar) in (select unnest(cast($customer_ids as varchar[])))
