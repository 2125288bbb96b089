-- Hand a batch to the ESP: planned -> sending, recorded (and committed) before the request goes
-- out, so a crash mid-request leaves rows the next run knows may have been delivered.
-- Parameters: $run_id, $send_ids.
update nudge.send_ledger
set
    status = 'sending',
    -- One attempt per hand-over; the provider's own retries inside it are added at settle.
    attempts = attempts + 1,
    sending_at = now(),
    updated_at = now()
where
    run_id = $run_id
    and status = 'planned'
    and send_id in (select unnest($send_ids))
returning send_id
