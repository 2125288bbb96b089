-- Every send whose delivery is unknown, for `nudge resolve-unknown`. Parameters: $trigger
-- (null: every trigger).
select
    send_id,
    trigger,
    step,
    customer_id,
    provider,
    sending_at,
    error
from nudge.send_ledger
where status = 'unknown' and ($trigger is null or trigger = $trigger)
order by trigger asc, sending_at asc, send_id asc
