"""One tick of the real Dagster job, in this process: what ``nudge run`` and the demo execute.

``nudge run`` executes the same job the hourly schedule launches, so what a person runs by
hand is exactly what production runs, and it is recorded in the same Dagster instance
(``DAGSTER_HOME``, by default ``.nudge/dagster_home``) that ``make dev`` shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings

# Written into a DAGSTER_HOME nudge creates: no telemetry banner ("Welcome to Dagster!"), no
# "no dagster.yaml found" warning on a newcomer's first run, and Dagster's SQLite event log with
# its cross-run index kept open (dagster_storage.py: the same files, 1 to 1.5 s less a tick).
DAGSTER_YAML = """\
# Created by nudge for `nudge run` and `make dev`; edit freely (Dagster's instance settings).
telemetry:
  enabled: false
# Dagster's SQLite event log, same files, its cross-run index kept open (dagster_storage.py).
event_log_storage:
  module: dagster_project.dagster_storage
  class: PooledSqliteEventLogStorage
  config: {}
"""
# What earlier versions of nudge wrote: replaced by the above, as nobody edited it.
_EARLIER_DAGSTER_YAML = """\
# Created by nudge for `nudge run` and `make dev`; edit freely (Dagster's instance settings).
telemetry:
  enabled: false
"""


@dataclass
class TickOutcome:
    """What one tick did: success, its as_of, and each trigger's summary."""

    success: bool
    as_of: str | None
    run_id: str
    triggers: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # "asset/check: description" of every asset check that did not pass.
    failed_checks: list[str] = field(default_factory=list)

    @property
    def held(self) -> list[dict[str, Any]]:
        return [t for t in self.triggers if t.get("outcome") == "held"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare_dagster_home(home: Path) -> Path:
    """Create ``home`` with nudge's ``dagster.yaml`` unless it already has one."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() == _EARLIER_DAGSTER_YAML:
        # Whole or not at all: another process may be reading it right now.
        written = home / f".dagster.yaml.{os.getpid()}"
        written.write_text(DAGSTER_YAML)
        os.replace(written, config)
    return home


@contextlib.contextmanager
def dagster_instance(home: Path) -> Iterator[Any]:
    """The Dagster instance in ``home``, its storage created by one process at a time.

    Dagster creates its SQLite storage when an instance is first built; two processes doing
    that at once on a new home (a schedule tick and a manual run) fail with "table ... already
    exists" and can leave the home's schema history broken for good. An exclusive lock on a
    file in the home makes the second one wait until the first has created it.
    """
    from dagster import DagsterInstance

    prepare_dagster_home(home)
    with open(home / ".nudge-instance.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            # Dagster's own tools find the home by DAGSTER_HOME, and so does nudge's event log
            # storage (dagster_storage.py) for its default folder: the same here.
            with _pinned({"DAGSTER_HOME": str(home)}):
                instance = DagsterInstance.from_config(str(home))
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    # Entered as Dagster enters it: while it is open, Dagster's context (the instance's
    # definitions-state storage, which loading definitions reads) is this instance's, and on
    # the way out it is reset and the instance disposed.
    with instance:
        yield instance


@contextlib.contextmanager
def _environment(settings: Settings) -> Iterator[None]:
    """dbt (a subprocess of the job) reads the warehouse from ``NUDGE_WAREHOUSE``, Dagster its
    home from ``DAGSTER_HOME``: pin both to ``settings`` for this tick, then restore them."""
    with _pinned(
        {
            "NUDGE_WAREHOUSE": settings.warehouse_setting,
            "DAGSTER_HOME": str(settings.dagster_home),
        }
    ):
        yield


@contextlib.contextmanager
def _pinned(pinned: dict[str, str]) -> Iterator[None]:
    """These environment variables set while the block runs, then restored."""
    saved = {name: os.environ.get(name) for name in pinned}
    os.environ.update(pinned)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_tick(
    as_of: str | None = None,
    *,
    settings: Settings | None = None,
    allow_late: bool = False,
    verbose: bool = False,
    approve: list[str] | None = None,
    transactional: bool = False,
    full_refresh: bool = False,
) -> TickOutcome:
    """Execute the tick job in this process and collect each send asset's summary.

    ``settings`` defaults to the NUDGE_* environment; tests and benchmarks pass their own.
    ``approve`` releases the guards' hold on those triggers for this run. ``transactional``
    runs the 5-minute job instead: the transactional triggers and the models they need.
    ``full_refresh`` rebuilds the incremental models from the whole event history.
    """
    from .defs.schedules import TICK_JOB_NAME, TRANSACTIONAL_JOB_NAME, tick_run_config

    settings = settings or Settings.from_env()
    run_config: dict[str, Any] = tick_run_config(
        as_of, allow_late=allow_late, approve=approve, full_refresh=full_refresh
    )
    job = TRANSACTIONAL_JOB_NAME if transactional else TICK_JOB_NAME
    return _execute(job, run_config, settings, as_of=as_of, verbose=verbose)


def run_reporting(
    as_of: str | None = None, *, settings: Settings | None = None, verbose: bool = False
) -> TickOutcome:
    """Build the reporting models (the daily reporting job) in this process, as of ``as_of``."""
    from .defs.schedules import REPORTING_JOB_NAME, tick_run_config

    settings = settings or Settings.from_env()
    run_config: dict[str, Any] = tick_run_config(as_of)
    return _execute(REPORTING_JOB_NAME, run_config, settings, as_of=as_of, verbose=verbose)


def _execute(
    job_name: str,
    run_config: dict[str, Any],
    settings: Settings,
    *,
    as_of: str | None,
    verbose: bool,
) -> TickOutcome:
    from .definitions import build_definitions

    if not verbose:
        # Failures are summarized below; Dagster's own error logs (stack traces) need --verbose.
        run_config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    # dagster-dbt echoes every dbt event to stdout (for Dagster's compute logs); the CLI keeps
    # that out of the way and shows it only with --verbose or when the tick fails.
    captured = io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_environment(settings))
        definitions = build_definitions(settings)
        if job_name not in {job.name for job in definitions.jobs or ()}:
            raise ConfigError(
                f"no job {job_name}: the dbt project declares no trigger it would run "
                "(a transactional run needs a trigger with `category: transactional`)"
            )
        # The instance first: resolving the job loads the definitions, which read the current
        # instance's state storage. Without one open, Dagster reads whatever an earlier instance
        # in this process left in its context, and fails once that instance is collected
        # ("Attempted to resolve undefined DagsterInstance weakref").
        instance = stack.enter_context(dagster_instance(settings.dagster_home))
        job = definitions.resolve_job_def(job_name)
        if not verbose:
            stack.enter_context(contextlib.redirect_stdout(captured))
        result = job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )

    summaries: list[dict[str, Any]] = []
    for event in result.get_asset_materialization_events():
        materialization = getattr(event.event_specific_data, "materialization", None)
        if materialization is None or "summary" not in materialization.metadata:
            continue
        value = materialization.metadata["summary"].value
        if isinstance(value, dict):
            summaries.append(value)
    summaries.sort(key=lambda s: s["trigger"])
    error = None
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        error = (
            "\n".join(
                f"{e.step_key}: {_first_lines(_root_cause(e.step_failure_data.error).message)}"
                for e in failures
                if e.step_failure_data and e.step_failure_data.error
            )
            or "the run failed"
        )
    failed_checks = [
        f"{'/'.join(e.asset_key.path)}:{e.check_name}"
        + (f": {e.description}" if e.description else "")
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    resolved_as_of = summaries[0]["as_of"] if summaries else as_of
    return TickOutcome(
        result.success, resolved_as_of, result.run_id, summaries, error, sorted(failed_checks)
    )


def _root_cause(error: Any) -> Any:
    """Dagster wraps the asset's exception in its own; the innermost one says what went wrong."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def _first_lines(text: str, limit: int = 25) -> str:
    """The head of a long error (dbt's are pages long); the rest is behind --verbose."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) <= limit:
        return "\n".join(lines)
    return "\n".join([*lines[:limit], f"... {len(lines) - limit} more lines: rerun with --verbose"])
