-- Append what a provider's workers queued since the last commit to the hand-over journal
-- (dagster_project/handover.py): requests about to go out, and the answers that came back.
-- `journal_rows` is a frame of nudge.handovers rows.
insert into nudge.handovers (
    run_id, trigger, as_of, send_id, seq, event, request_key, status, provider_message_id, error,
    attempts, retryable, recorded_at
)
select
    run_id,
    trigger,
    as_of,
    send_id,
    seq,
    event,
    request_key,
    status,
    provider_message_id,
    error,
    attempts,
    retryable,
    recorded_at
from journal_rows
