-- How a run's rows of one trigger ended, by status. Parameters: $trigger, $run_id.
select
    status,
    count(*) as sends
from nudge.send_ledger
where trigger = $trigger and run_id = $run_id
group by status
