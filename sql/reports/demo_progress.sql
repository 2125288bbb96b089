-- How the demo's sequences moved: per trigger and step, what the ledger says happened.
select
    trigger,
    step,
    min(step_index) as step_index,
    count(*) filter (where status = 'sent') as sent,
    count(*) filter (where status = 'holdout') as holdout,
    count(*) filter (where status = 'deferred') as still_deferred,
    count(*) filter (where status in ('skipped', 'expired')) as not_sent
from nudge.send_ledger
group by trigger, step
order by trigger, step_index
