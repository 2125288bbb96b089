-- The row a retried step wrote earlier for the same run and trigger (record_run.sql replaces
-- it). Parameters: $run_id, $trigger.
delete from nudge.runs
where run_id = $run_id and trigger = $trigger
