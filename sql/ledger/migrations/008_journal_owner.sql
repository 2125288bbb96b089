-- Where the pushes on this warehouse keep their hand-over journal (dagster_project/handover.py):
-- the machine and folder of the last push. On PostgreSQL the journal is a local folder while
-- the ledger is shared, so a push from elsewhere must not take over sends a dead push may have
-- handed over (guards.check_journal_owner). One row.
create table if not exists nudge.journal_owner (
    owner_id integer primary key,
    journal varchar not null,
    recorded_at timestamptz not null
);
