-- Record the provider's answer for each send of a batch, straight after the batch, or what a
-- dead run's journal says the provider answered (ledger.resume). `results` is a relation of
-- (run_id, send_id, status, reason, provider_message_id, error, attempts, retryable,
-- batch_id, sent_as_of, handed_over_at) where status is sent, failed or unknown, sent_as_of
-- the tick that handed it over and handed_over_at when it first went out; reason, when set, is
-- the short code of a failure decided before any request (message_too_large). A retryable
-- failure delivered nothing: later ticks retry it, no sooner than next_attempt_at (exponential
-- backoff across ticks, from the tick's as_of so simulated ticks behave like live ones). Any
-- other failure is final.
-- Parameters: $as_of, $retry_base_minutes, $retry_max_backoff_minutes.
update nudge.send_ledger as ledger
set
    status = case
        when settled.status = 'failed' and settled.retryable then 'failed_retryable'
        when settled.status = 'failed' then 'failed_permanent'
        else settled.status
    end,
    reason = case
        when settled.status = 'sent' then null
        when settled.reason is not null then settled.reason
        when settled.status = 'unknown' then 'no_answer'
        when settled.status = 'failed' and settled.retryable then 'provider_unavailable'
        when settled.attempts = 0 then 'not_sendable'
        else 'provider_rejected'
    end,
    provider_message_id = settled.provider_message_id,
    error = settled.error,
    attempts = ledger.attempts + settled.attempts,
    batch_id = coalesce(settled.batch_id, ledger.batch_id),
    sending_at = least(settled.handed_over_at, ledger.sending_at),
    -- The tick that handed it over (last): frequency caps count sends by it.
    sent_as_of = coalesce(settled.sent_as_of, ledger.sent_as_of, $as_of),
    next_attempt_at = case
        when settled.status = 'failed' and settled.retryable
            then $as_of + interval '1 minute' * (
                    cast(
                        least(
                            $retry_max_backoff_minutes,
                            -- Doubling with the attempts before this batch: the first
                            -- failure waits the base, later ones longer.
                            $retry_base_minutes * pow(2, ledger.attempts)
                        ) as bigint
                    )
                )
    end,
    settled_at = now(),
    updated_at = now()
from results as settled
where
    ledger.send_id = settled.send_id
    and ledger.run_id = settled.run_id
    and ledger.status in ('planned', 'sending')
returning
    ledger.send_id, ledger.trigger, ledger.status, ledger.reason, ledger.error, ledger.attempts,
    ledger.batch_id
