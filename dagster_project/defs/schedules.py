"""The jobs and their schedules: the hourly tick, the transactional tick every 5 minutes, and
the daily reporting job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
)

if TYPE_CHECKING:  # what define_asset_job returns; dagster does not export the name
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

TICK_JOB_NAME = "nudge_tick"
TRANSACTIONAL_JOB_NAME = "nudge_transactional"
REPORTING_JOB_NAME = "nudge_reporting"
# Every 5 minutes but on the hour, when the hourly tick sends transactional mail too: an order
# placed at 12:01 is confirmed by the 12:05 run. Two runs at the same instant would only build
# the same tables twice and race for the same claims (which the ledger makes safe, not free).
TRANSACTIONAL_CRON = "5-55/5 * * * *"
IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
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


def transactional_job(sends: Sequence[AssetKey]) -> UnresolvedAssetJobDefinition:
    """The transactional tick: the transactional triggers' send assets and only what they need
    upstream (landing drains, staging and intermediate models, their eligibility tables), so
    dbt builds a handful of models and no marketing table is rebuilt under the hourly tick.

    It shares the ledger and the warehouse lock with the hourly tick, which sends the same
    triggers on the hour: a send_id is claimed once, whichever run gets there first.
    """
    return define_asset_job(
        name=TRANSACTIONAL_JOB_NAME,
        selection=AssetSelection.assets(*sends).upstream() - REPORTING,
        executor_def=in_process_executor,
        description=(
            "The transactional triggers only (order confirmations, shipping notifications, "
            "double opt-in): their dbt models, then their sends, every 5 minutes."
        ),
    )


def transactional_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    """Every 5 minutes (but on the hour), as of its scheduled time."""

    @schedule(
        job=job,
        cron_schedule=TRANSACTIONAL_CRON,
        execution_timezone="UTC",
        name="transactional_tick",
    )
    def transactional_tick(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        # One at a time: behind a long hourly push, runs every 5 minutes would queue for the
        # warehouse lock and time out. The run in progress, or the next one, sends what came in.
        busy = context.instance.get_run_records(
            RunsFilter(job_name=job.name, statuses=IN_PROGRESS), limit=1
        )
        if busy:
            return SkipReason(
                f"{job.name} run {busy[0].dagster_run.run_id} is still in progress; the next "
                "run sends what is due by then"
            )
        as_of = context.scheduled_execution_time.isoformat()
        return RunRequest(
            run_key=as_of, run_config=tick_run_config(as_of), tags={"nudge/as_of": as_of}
        )

    return transactional_tick


def tick_run_config(
    as_of: str | None,
    *,
    allow_late: bool = False,
    approve: list[str] | None = None,
    full_refresh: bool = False,
) -> dict:
    """Run config of a tick: its instant (the schedule, `nudge run --as-of`), lateness, the
    triggers whose guard hold is released (`nudge run --approve`) and whether the incremental
    models are rebuilt in full (`nudge run --full-refresh`)."""
    resources: dict = {}
    tick: dict = {}
    if as_of:
        tick["as_of"] = as_of
    if allow_late:
        tick["allow_late"] = True
    if full_refresh:
        tick["full_refresh"] = True
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
