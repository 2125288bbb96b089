-- Hand a batch to the ESP: planned -> sending, recorded (and committed) before the request goes
-- out, so a crash mid-request leaves rows the next run knows may have been delivered. The
-- batch's idempotency key is recorded with it; a batch resent after a crash keeps its old key.
-- Parameters: $run_id, $send_ids, $batch_id, $as_of (the tick: frequency caps count by it).
update nudge.send_ledger
set
    status = 'sending',
    batch_id = coalesce(batch_id, $batch_id),
    -- One attempt per hand-over; the provider's own retries inside it are added at settle.
    attempts = attempts + 1,
    sending_at = now(),
    sent_as_of = $as_of,
    updated_at = now()
where
    run_id = $run_id
    and status = 'planned'
    and send_id in (select unnest($send_ids))
returning send_id, trigger, status, reason, error, attempts, batch_id
