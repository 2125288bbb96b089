-- An operator's decision on unknown sends (ledger.resolve_unknown): resend (failed_retryable,
-- no wait) or drop (skipped). Parameters: $status, $reason, $error, $trigger (null: all),
-- $all_ids, $send_ids.
update nudge.send_ledger as ledger
set
    status = $status,
    reason = $reason,
    error = $error,
    next_attempt_at = null,
    batch_id = null,
    settled_at = now(),
    updated_at = now()
where
    status = 'unknown'
    and ($trigger is null or trigger = $trigger)
    and ($all_ids or send_id in (select unnest(cast($send_ids as varchar[]))))
