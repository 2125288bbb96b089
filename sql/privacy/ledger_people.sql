-- The ledger rows of these customer ids (or pseudonyms, for an erasure repeated) or these
-- normalised addresses, with the first name their rendering context had.
-- Parameters: $customer_ids, $emails.
select
    customer_id,
    lower(trim(email)) as email,
    context ->> 'first_name' as first_name,
    send_id,
    trigger
from nudge.send_ledger
where
    customer_id in (select unnest(cast($customer_ids as varchar[])))
    or lower(trim(email)) in (select unnest(cast($emails as varchar[])))
