-- Append state changes to the history, in the transaction that made them. `changed_rows` is
-- a frame of (send_id, trigger, status, reason, error, attempts, batch_id): what the changing
-- statement returned. Parameters: $run_id, $as_of.
insert into nudge.send_events (
    send_id, trigger, status, reason, error, attempts, batch_id, run_id, as_of, recorded_at
)
select
    changed.send_id,
    changed.trigger,
    changed.status,
    changed.reason,
    changed.error,
    changed.attempts,
    changed.batch_id,
    $run_id as run_id,
    $as_of as as_of,
    now() as recorded_at
from changed_rows as changed
