-- This run's planned rows of one trigger, in push order: rows resumed for a same-key resend
-- first, grouped by their key, then new rows by due time. Parameters: $trigger, $run_id.
select
    send_id,
    customer_id,
    cast(context as varchar) as context,
    batch_id
from nudge.send_ledger
where trigger = $trigger and run_id = $run_id and status = 'planned'
order by batch_id asc nulls last, due_at asc, send_id asc
