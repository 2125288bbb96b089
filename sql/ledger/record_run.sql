-- One row per (run, trigger) in nudge.runs; a retried step replaces its own row. `run_row` is
-- a one-row frame whose columns are named as the table's (ledger.record_run), so the counts are
-- listed once, in dagster_project/runs.py.
insert or replace into nudge.runs by name
select * from run_row  -- noqa: AM04
