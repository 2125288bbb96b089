-- The hand-over journal (dagster_project/handover.py): every request a provider is about to
-- send ('handed_over', committed before it goes out) and every answer ('answered', with the
-- result), per send. A batch's rows are deleted when the batch settles in the ledger, so what
-- stays here is what a run that died mid-push left: the next tick settles the answered sends
-- from it, returns the ones never handed over to 'planned', and only the sends handed over
-- without an answer are in doubt.
create table if not exists nudge.handovers (
    run_id varchar not null,
    trigger varchar not null,
    -- The tick of the run: a send settled from here counts for the caps at that tick.
    as_of timestamptz,
    send_id varchar not null,
    -- Order within the run: an answer with a higher seq than the last hand-over settles it.
    seq bigint not null,
    event varchar not null,
    -- The request's idempotency key: an idempotent provider resends it under the same key.
    request_key varchar,
    status varchar,
    provider_message_id varchar,
    error varchar,
    attempts integer,
    retryable boolean,
    recorded_at timestamptz not null
);
