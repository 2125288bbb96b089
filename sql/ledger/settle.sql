-- Record the provider's answer for each send of a batch, straight after the batch.
-- `results` is a frame of (send_id, status, provider_message_id, error, attempts, retryable)
-- where status is sent, failed or unknown. A retryable failure delivered nothing: later ticks
-- retry it, no sooner than next_attempt_at (exponential backoff across ticks, from the tick's
-- as_of so simulated ticks behave like live ones). Any other failure is final.
-- Parameters: $run_id, $as_of, $retry_base_minutes, $retry_max_backoff_minutes.
update nudge.send_ledger as ledger
set
    status = case
        when results.status = 'failed' and results.retryable then 'failed_retryable'
        when results.status = 'failed' then 'failed_permanent'
        else results.status
    end,
    reason = case
        when results.status = 'sent' then null
        when results.status = 'unknown' then 'no_answer'
        when results.status = 'failed' and results.retryable then 'provider_unavailable'
        when results.attempts = 0 then 'not_sendable'
        else 'provider_rejected'
    end,
    provider_message_id = results.provider_message_id,
    error = results.error,
    attempts = ledger.attempts + greatest(results.attempts - 1, 0),
    next_attempt_at = case
        when results.status = 'failed' and results.retryable
            then $as_of + to_minutes(
                    cast(
                        least(
                            $retry_max_backoff_minutes,
                            $retry_base_minutes * pow(2, greatest(ledger.attempts - 1, 0))
                        ) as bigint
                    )
                )
    end,
    settled_at = now(),
    updated_at = now()
from results
where
    ledger.send_id = results.send_id
    and ledger.run_id = $run_id
    and ledger.status in ('planned', 'sending')
returning
    ledger.send_id, ledger.trigger, ledger.status, ledger.reason, ledger.error, ledger.attempts,
    ledger.batch_id
