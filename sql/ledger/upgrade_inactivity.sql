-- The single-step `inactivity` trigger became the `win_back` sequence, with the same entry
-- keys and the same first step. A `we_miss_you` that may have gone out as `inactivity` is
-- recorded for `win_back` as skipped (reason sent_before_upgrade), so nobody gets it twice
-- and the sequence moves on to its second step. A no-op once done (the primary key).
insert into nudge.send_ledger (
    send_id, trigger, trigger_key, step, step_index, category, customer_id, reentry_key, email,
    status, reason, error, attempts, run_id, as_of, entered_at, due_at, expires_at, context,
    planned_at, settled_at, updated_at
)
select
    md5('win_back|' || previous.trigger_key || '|we_miss_you') as send_id,
    'win_back' as trigger,
    previous.trigger_key,
    'we_miss_you' as step,
    1 as step_index,
    'marketing' as category,
    previous.customer_id,
    previous.customer_id as reentry_key,
    previous.email,
    'skipped' as status,
    'sent_before_upgrade' as reason,
    'sent as inactivity/we_miss_you (' || previous.send_id || ') before the upgrade' as error,
    0 as attempts,
    'upgrade' as run_id,
    previous.as_of,
    previous.entered_at,
    previous.due_at,
    previous.expires_at,
    previous.context,
    now() as planned_at,
    now() as settled_at,
    now() as updated_at
from nudge.send_ledger as previous
where
    previous.trigger = 'inactivity'
    and previous.step = 'we_miss_you'
    and previous.status in ('sending', 'sent', 'unknown')
on conflict (send_id) do nothing
