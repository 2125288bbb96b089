-- The send ledger: one row per send_id, the single source of truth for "already sent".
-- Statuses: planned (claimed, not yet handed to the ESP), sending (handed over, result not yet
-- recorded), sent, failed (the reason is in `error`), unknown (a run died while sending to a
-- provider without idempotency keys: maybe delivered, never resent automatically), expired
-- (planned but its grace window passed before it could go out).
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
