-- Record the provider's answer for each send of a batch, straight after the batch.
-- `results` is a frame of (send_id, status, provider_message_id, error, attempts, retryable)
-- where status is sent, failed or unknown. A retryable failure delivered nothing and is resumed
-- by a later tick within its grace window; any other failure is final.
-- Parameters: $run_id.
update nudge.send_ledger as ledger
set
    status = case
        when results.status = 'failed' and results.retryable then 'failed_retryable'
        when results.status = 'failed' then 'failed_permanent'
        else results.status
    end,
    provider_message_id = results.provider_message_id,
    error = results.error,
    attempts = ledger.attempts + greatest(results.attempts - 1, 0),
    settled_at = now(),
    updated_at = now()
from results
where
    ledger.send_id = results.send_id
    and ledger.run_id = $run_id
    and ledger.status in ('planned', 'sending')
