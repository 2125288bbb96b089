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
--   skipped           no longer eligible when a later tick resumed it (e.g. unsubscribed)
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
