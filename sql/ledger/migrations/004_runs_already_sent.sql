-- nudge.runs carries every count of dagster_project/runs.py::RunCounts; already_sent was the
-- one it lacked.
alter table nudge.runs add column if not exists already_sent integer;
