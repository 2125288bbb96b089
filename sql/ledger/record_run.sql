-- One row per (run, trigger) in nudge.runs; a retried step replaces its own row.
-- Parameters: one per column.
insert or replace into nudge.runs (
    run_id, trigger, as_of, started_at, finished_at, duration_seconds, outcome, provider,
    candidates, eligible, new, resumed, sent, failed, unknown, expired, skipped, held,
    hold_reason, errors, holdout, deferred
)
values (
    $run_id, $trigger, $as_of, $started_at, $finished_at, $duration_seconds, $outcome, $provider,
    $candidates, $eligible, $new, $resumed, $sent, $failed, $unknown, $expired, $skipped, $held,
    $hold_reason, $errors, $holdout, $deferred
)
