-- The hand-over journals that may hold requests on the wire (dagster_project/handover.py), one
-- row per trigger: written by a push just before its journal opens, deleted once its journal
-- closed with every batch settled, or once a later push settled a dead one's from it. On
-- PostgreSQL the ledger is shared and the journal is a local folder: a push keeping another
-- journal must not take over that trigger's sends (guards.check_journal).
create table if not exists nudge.open_journals (
    trigger varchar primary key,
    journal varchar not null,
    opened_at timestamptz not null
);
