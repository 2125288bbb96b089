-- Record this tick's decisions (plan_decisions, from plan_decide.sql) for sends not in the
-- ledger yet. The primary key makes the claim atomic: a send_id that another run claimed first
-- is skipped, never planned twice. Only 'planned' rows go to the provider; holdout, skipped and
-- deferred rows say why a due step did not go out.
-- Parameters: $run_id, $as_of, $provider.
insert into nudge.send_ledger (
    send_id, trigger, trigger_key, step, step_index, variant, template, category, customer_id,
    reentry_key, email, status, reason, provider, attempts, run_id, as_of, entered_at, due_at,
    expires_at, context, planned_at, settled_at, updated_at
)
select
    decided.send_id,
    decided.trigger,
    decided.trigger_key,
    decided.step,
    decided.step_index,
    decided.variant,
    decided.template,
    decided.category,
    decided.customer_id,
    decided.reentry_key,
    decided.email,
    decided.decided_status as status,
    decided.decided_reason as reason,
    $provider as provider,
    0 as attempts,
    $run_id as run_id,
    $as_of as as_of,
    decided.entered_at,
    decided.due_at,
    decided.expires_at,
    -- The whole eligibility row (and the decision): what the email is rendered from.
    to_json(decided) as context,
    now() as planned_at,
    case when decided.decided_status in ('holdout', 'skipped') then now() end as settled_at,
    now() as updated_at
from plan_decisions as decided
where decided.send_id not in (select ledger.send_id from nudge.send_ledger as ledger)
on conflict (send_id) do nothing
