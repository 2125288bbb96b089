-- Sends an earlier tick deferred (frequency cap) that this tick's decisions release: planned
-- now with a fresh rendering context, or skipped when the trigger's cap policy says so. Sends
-- still capped keep their row unchanged (no event is recorded for "still deferred").
-- Parameters: $run_id, $as_of.
update nudge.send_ledger as ledger
set
    status = decided.decided_status,
    reason = decided.decided_reason,
    context = to_json(decided),
    run_id = $run_id,
    as_of = $as_of,
    settled_at = case when decided.decided_status = 'skipped' then now() end,
    updated_at = now()
from plan_decisions as decided
where
    ledger.send_id = decided.send_id
    and ledger.status = 'deferred'
    and decided.decided_status != 'deferred'
