-- An erased person's sends that a later tick would still act on (deferred by the frequency
-- cap, waiting to be retried) are settled as skipped, reason erased. Rows a run left planned
-- or sending are the crash recovery's: the next tick finds them no longer eligible (or in
-- doubt). Parameters: $customer_id.
update nudge.send_ledger
set
    status = 'skipped',
    reason = 'erased',
    error = 'the person was erased (nudge erase)',
    next_attempt_at = null,
    settled_at = now(),
    updated_at = now()
where
    customer_id = $customer_id
    and status in ('deferred', 'failed_retryable')
