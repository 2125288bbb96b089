-- Who each of these sends went to, and at which address: the push-time re-check maps a
-- provider's "do not mail" event that names only its send (or an old address) to the person.
-- Parameter: $send_ids.
select
    send_id,
    customer_id,
    lower(trim(email)) as email
from nudge.send_ledger
where send_id in (select unnest(cast($send_ids as varchar[])))
