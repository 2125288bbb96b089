-- One customer's consent changes from every source, as the models see them ({relation} is
-- intermediate.int_consent__changes), newest first. Parameters: $customer_id.
select
    list,
    status,
    changed_at,
    source,
    send_id
from {relation}
where customer_id = $customer_id
order by changed_at desc, list asc
