-- Which of sql/ledger/migrations/*.sql this warehouse has applied (ledger.ensure_ledger).
create schema if not exists nudge;

create table if not exists nudge.migrations (
    version varchar primary key,
    applied_at timestamptz not null
);
