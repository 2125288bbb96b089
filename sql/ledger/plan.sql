-- Claim this tick's new sends: every eligible row of the trigger's eligibility table whose
-- send_id is not in the ledger yet. The primary key makes the claim atomic: a send_id that
-- another run claimed first is skipped, never planned twice.
-- Parameters: $run_id, $as_of, $provider. {eligibility} is the trigger's eligibility relation.
insert into nudge.send_ledger (
    send_id, trigger, trigger_key, step, customer_id, email, status, provider, attempts,
    run_id, as_of, due_at, expires_at, context, planned_at, updated_at
)
select
    eligibility.send_id,
    eligibility.trigger,
    eligibility.trigger_key,
    eligibility.step,
    eligibility.customer_id,
    eligibility.email,
    'planned' as status,
    $provider as provider,
    0 as attempts,
    $run_id as run_id,
    $as_of as as_of,
    eligibility.due_at,
    eligibility.expires_at,
    to_json(eligibility) as context,
    now() as planned_at,
    now() as updated_at
from {eligibility} as eligibility
where
    eligibility.is_eligible
    and eligibility.due_at <= $as_of
    and $as_of <= eligibility.expires_at
    and eligibility.send_id not in (select ledger.send_id from nudge.send_ledger as ledger)
on conflict (send_id) do nothing
