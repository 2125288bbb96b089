-- The send ledger: one row per send_id, the single source of truth for "already sent".
-- Statuses (the reason for every non-sent outcome is in `error`):
--   planned           claimed by a run, not yet handed to the provider
--   sending           handed to the provider, answer not yet recorded
--   sent              accepted by the provider (provider_message_id set)
--   failed_retryable  not delivered, transient cause (429, 5xx, no connection): later ticks
--                     resume it while its grace window lasts
--   failed_permanent  not delivered and never will be as is (rejected by the provider, or the
--                     template failed on this row)
--   unknown           may have been delivered (a run died mid-request, or the answer timed out)
--                     through a provider without idempotency keys: never resent automatically
--   expired           its grace window ended before it could go out
--   skipped           not sent on purpose: no longer eligible when resumed, unsubscribed between
--                     the dbt build and the push, or an unknown send dropped by an operator
--   holdout           held out of the send on purpose to measure lift (never sent)
--   deferred          due, but the customer's frequency cap is full: planned again by a later
--                     tick once the cap allows (or expired at the end of its grace window)
-- `reason` is a short code for every non-sent outcome (see the README), `error` the full text.
create schema if not exists nudge;

create table if not exists nudge.send_ledger (
    send_id varchar primary key,
    trigger varchar not null,
    trigger_key varchar not null,
    step varchar not null,
    customer_id varchar not null,
    email varchar,
    status varchar not null,
    provider varchar,
    provider_message_id varchar,
    attempts integer not null default 0,
    error varchar,
    run_id varchar,
    as_of timestamptz,
    due_at timestamptz,
    expires_at timestamptz,
    -- The eligibility row at planning time: what the email is rendered from, so a send planned
    -- by a run that died is rendered identically by the run that finishes it.
    context json,
    planned_at timestamptz not null,
    sending_at timestamptz,
    settled_at timestamptz,
    updated_at timestamptz not null
);

-- Every status change of every send, appended in the same transaction as the change: the
-- ledger says where a send is, this says how it got there (and proves nothing was sent twice).
create table if not exists nudge.send_events (
    send_id varchar not null,
    trigger varchar not null,
    status varchar not null,
    reason varchar,
    error varchar,
    attempts integer,
    batch_id varchar,
    run_id varchar,
    as_of timestamptz,
    recorded_at timestamptz not null
);

-- One row per run and trigger: what a tick did, for dashboards, the mass-send guard's
-- baseline and incident review. A retried step replaces its own row.
create table if not exists nudge.runs (
    run_id varchar not null,
    trigger varchar not null,
    as_of timestamptz not null,
    started_at timestamptz not null,
    finished_at timestamptz,
    duration_seconds double precision,
    outcome varchar not null,
    provider varchar,
    candidates integer,
    eligible integer,
    new integer,
    resumed integer,
    sent integer,
    failed integer,
    unknown integer,
    expired integer,
    skipped integer,
    held integer,
    hold_reason varchar,
    errors json,
    primary key (run_id, trigger)
);
