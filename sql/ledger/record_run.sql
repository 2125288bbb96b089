-- One row per (run, trigger) in nudge.runs; a retried step replaces its own row (deleted by
-- record_run_delete.sql in the same transaction). `run_row` is a one-row frame whose columns
-- are named as the table's (ledger.record_run), so the counts are listed once, in
-- dagster_project/runs.py. {columns} is their list, {values} the same read from run_row.
insert into nudge.runs ({columns})
select {values} from run_row
