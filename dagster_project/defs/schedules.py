"""The tick job and its hourly schedule."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    in_process_executor,
    schedule,
)

TICK_JOB_NAME = "nudge_tick"

# In-process: dbt and the send steps run one after another in one process, so they never hold
# the DuckDB file at the same time (the warehouse lock also guards against other runs).
nudge_tick_job = define_asset_job(
    name=TICK_JOB_NAME,
    selection=AssetSelection.all(),
    executor_def=in_process_executor,
    description="One tick: dbt build at as_of, then every trigger's send asset.",
)


def tick_run_config(
    as_of: str | None, *, allow_late: bool = False, approve: list[str] | None = None
) -> dict:
    """Run config of a tick: its instant (the schedule, `nudge run --as-of`), lateness, and
    the triggers whose guard hold is released (`nudge run --approve`)."""
    resources: dict = {}
    tick: dict = {}
    if as_of:
        tick["as_of"] = as_of
    if allow_late:
        tick["allow_late"] = True
    if tick:
        resources["tick"] = {"config": tick}
    if approve:
        resources["send_policy"] = {"config": {"approve": list(approve)}}
    return {"resources": resources} if resources else {}


@schedule(job=nudge_tick_job, cron_schedule="0 * * * *", execution_timezone="UTC")
def hourly_tick(context: ScheduleEvaluationContext) -> RunRequest:
    """Every hour on the hour; the tick's as_of is its scheduled time, so a late run is exact."""
    as_of = context.scheduled_execution_time.isoformat()
    return RunRequest(run_key=as_of, run_config=tick_run_config(as_of), tags={"nudge/as_of": as_of})
