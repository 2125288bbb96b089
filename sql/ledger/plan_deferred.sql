-- Sends an earlier tick deferred (frequency cap) that this tick's decisions release: planned
-- now with a fresh rendering context, or skipped when the trigger's cap policy says so. Sends
-- still capped keep their row unchanged (no event is recorded for "still deferred").
-- Parameters: $run_id, $as_of, $provider.
update nudge.send_ledger as ledger
set
    status = decided.decided_status,
    reason = decided.decided_reason,
    context = to_json(decided),
    -- What the row says now, not when it was deferred: the provider of this run, the current
    -- address, timing and variant (a cart edit moves the entry).
    provider = $provider,
    email = decided.email,
    due_at = decided.due_at,
    expires_at = decided.expires_at,
    entered_at = decided.entered_at,
    variant = decided.variant,
    template = decided.template,
    run_id = $run_id,
    as_of = $as_of,
    settled_at = case when decided.decided_status = 'skipped' then now() end,
    updated_at = now()
from plan_decisions as decided
where
    ledger.send_id = decided.send_id
    and ledger.status = 'deferred'
    and decided.decided_status != 'deferred'
