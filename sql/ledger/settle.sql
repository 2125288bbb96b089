-- Record the ESP's answer for each send of a batch, straight after the batch.
-- `results` is a frame of (send_id, status, provider_message_id, error, attempts).
-- Parameters: $run_id.
update nudge.send_ledger as ledger
set
    status = results.status,
    provider_message_id = results.provider_message_id,
    error = results.error,
    attempts = greatest(ledger.attempts, results.attempts),
    settled_at = now(),
    updated_at = now()
from results
where
    ledger.send_id = results.send_id
    and ledger.run_id = $run_id
    and ledger.status in ('planned', 'sending')
