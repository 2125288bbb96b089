"""The tick job and its hourly schedule; the reporting job and its daily schedule."""

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
REPORTING_JOB_NAME = "nudge_reporting"
# The group of the reporting models' assets (defs/dbt.py: groups follow the model folders).
REPORTING = AssetSelection.groups("reporting")  # defs/dbt.py REPORTING_GROUP

# In-process: dbt and the send steps run one after another in one process, so they never hold
# the DuckDB file at the same time (the warehouse lock also guards against other runs).
nudge_tick_job = define_asset_job(
    name=TICK_JOB_NAME,
    selection=AssetSelection.all() - REPORTING,
    executor_def=in_process_executor,
    description="One tick: dbt build at as_of, then every trigger's send asset.",
)

nudge_reporting_job = define_asset_job(
    name=REPORTING_JOB_NAME,
    selection=REPORTING,
    executor_def=in_process_executor,
    description=(
        "The reporting models (models/reporting) over every send up to as_of: funnels, "
        "attribution, holdout lift, A/B results, deliverability; headline figures as metadata."
    ),
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


# Daily, not hourly: the reporting models rebuild over the whole send history and orders (the
# costliest models at scale) and need a second dbt start; marketers read them by the day. At
# 00:30 UTC, after midnight's tick; `nudge report` and the Dagster UI refresh them on demand.
@schedule(job=nudge_reporting_job, cron_schedule="30 0 * * *", execution_timezone="UTC")
def daily_reporting(context: ScheduleEvaluationContext) -> RunRequest:
    """Every day at 00:30 UTC, as of its scheduled time."""
    as_of = context.scheduled_execution_time.isoformat()
    return RunRequest(run_key=as_of, run_config=tick_run_config(as_of), tags={"nudge/as_of": as_of})
