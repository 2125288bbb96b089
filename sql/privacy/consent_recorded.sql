-- One customer's consent changes nudge recorded itself (nudge serve, drained from its
-- landing store), newest first. Parameters: $customer_id.
select
    change_id,
    lower(trim(list)) as list,
    lower(trim(status)) as status,
    changed_at,
    source,
    send_id,
    drained_at
from nudge.consent_changes
where customer_id = $customer_id
order by changed_at desc, list asc
