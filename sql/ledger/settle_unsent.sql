-- Settle a run's planned rows without handing them to the provider: 'skipped' (consent or
-- suppression re-checked at push time) or 'unknown' (an interrupted request that can no longer
-- be resent as it was). Parameters: $run_id, $send_ids, $status, $reason, $error.
update nudge.send_ledger as ledger
set
    status = $status,
    reason = $reason,
    error = $error,
    settled_at = now(),
    updated_at = now()
where
    run_id = $run_id
    and status = 'planned'
    and send_id in (select unnest(cast($send_ids as varchar[])))
