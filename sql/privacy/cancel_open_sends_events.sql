-- The history of the sends an erasure cancels (cancel_open_sends.sql, run right after in the
-- same transaction): a deferred or retrying send of an erased person is never sent.
-- Parameters: $customer_id, $run_id.
insert into nudge.send_events (
    send_id, trigger, status, reason, error, attempts, batch_id, run_id, as_of, recorded_at
)
select
    send_id,
    trigger,
    'skipped' as status,
    'erased' as reason,
    'the person was erased (nudge erase)' as error,
    attempts,
    batch_id,
    $run_id as run_id,
    null as as_of,
    now() as recorded_at
from nudge.send_ledger
where
    customer_id = $customer_id
    and status in ('deferred', 'failed_retryable')
