-- Sequences (issue 4): which variant and template went out, the entry's start and re-entry
-- key (re-entry policies), the category (frequency caps count marketing sends only) and the
-- tick that handed the send to the provider (caps count by tick time, so replays behave).
alter table nudge.send_ledger add column if not exists step_index integer;
alter table nudge.send_ledger add column if not exists variant varchar;
alter table nudge.send_ledger add column if not exists template varchar;
alter table nudge.send_ledger add column if not exists category varchar;
alter table nudge.send_ledger add column if not exists reentry_key varchar;
alter table nudge.send_ledger add column if not exists entered_at timestamptz;
alter table nudge.send_ledger add column if not exists sent_as_of timestamptz;
alter table nudge.runs add column if not exists holdout integer;
alter table nudge.runs add column if not exists deferred integer;

-- Rows written before sequences existed: their category (caps count marketing sends only) and
-- entry time come from the eligibility row they were rendered from, and a send's tick is the
-- tick that planned it. Touches only rows not upgraded yet, so it is a no-op on later ticks.
-- (A plain cast, so the migration runs on PostgreSQL too: nudge wrote these contexts itself,
-- entered_at as an ISO-8601 instant or not at all.)
update nudge.send_ledger
set
    category = coalesce(context ->> 'category', 'marketing'),
    entered_at = coalesce(entered_at, cast(context ->> 'entered_at' as timestamptz)),
    sent_as_of = coalesce(
        sent_as_of, case when status in ('sending', 'sent', 'unknown') then as_of end
    )
where category is null;

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
on conflict (send_id) do nothing;

-- ...and its history says so, as every change does.
insert into nudge.send_events (
    send_id, trigger, status, reason, error, attempts, batch_id, run_id, as_of, recorded_at
)
select
    upgraded.send_id,
    upgraded.trigger,
    upgraded.status,
    upgraded.reason,
    upgraded.error,
    upgraded.attempts,
    upgraded.batch_id,
    upgraded.run_id,
    upgraded.as_of,
    now() as recorded_at
from nudge.send_ledger as upgraded
where
    upgraded.run_id = 'upgrade'
    and upgraded.send_id not in (
        select events.send_id from nudge.send_events as events
        where events.run_id = 'upgrade'
    );
