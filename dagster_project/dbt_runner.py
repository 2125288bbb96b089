"""Running dbt from the engine, without Dagster: the executable, the manifest, one command.

The live tick runs ``dbt build`` through dagster-dbt (``defs/dbt.py``); preview, render,
backtest and the replays of the simulated week run dbt here, in a subprocess. Both use the
helpers below, so every dbt nudge starts is the one installed next to this interpreter (a
virtualenv's ``bin/`` need not be on ``PATH``) and reads the same project.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .config import DBT_PROJECT_DIR, MODELS_DIR, POSTGRES_PASSWORD_VAR, Settings

TARGET_DIR = DBT_PROJECT_DIR / "target"
# The dbt tag of the reporting models (dbt_project.yml): built after the sends by the daily
# reporting job, never by a tick.
REPORTING_TAG = "nudge_reporting"
MANIFEST = TARGET_DIR / "manifest.json"
PARTIAL_PARSE = "partial_parse.msgpack"

log = logging.getLogger(__name__)


class DbtBuildError(RuntimeError):
    """dbt could not parse or build the models (the message has dbt's own errors)."""


def dbt_executable() -> str:
    """The dbt next to this interpreter, so a venv's dbt is used even when it is not on PATH."""
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def dbt_env(warehouse: Path | Settings | None = None) -> dict[str, str]:
    """The environment of a dbt subprocess: no usage stats; the warehouse pinned if given (a
    DuckDB file, or the settings of either engine: PostgreSQL's target and URL from them)."""
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    if warehouse is None:
        return env
    postgres = warehouse.postgres if isinstance(warehouse, Settings) else None
    if postgres is None:
        file = warehouse.warehouse if isinstance(warehouse, Settings) else warehouse
        # The target too: an in-process PostgreSQL tick may have left NUDGE_DBT_TARGET set.
        env.update(NUDGE_WAREHOUSE=str(file), NUDGE_DBT_TARGET="duckdb")
        return env
    env.update(postgres.dbt_env(), NUDGE_WAREHOUSE=postgres.url)
    if postgres.password:
        # dbt reads the password from this variable only, and scrubs it from its logs.
        env[POSTGRES_PASSWORD_VAR] = postgres.password
    return env


def _newest_source_mtime() -> float:
    paths = [*MODELS_DIR.rglob("*"), *(DBT_PROJECT_DIR / "macros").rglob("*")]
    paths.append(DBT_PROJECT_DIR / "dbt_project.yml")
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def ensure_manifest() -> Path:
    """Parse the dbt project when its manifest is missing or older than the models.

    Called when Dagster loads the definitions and by the commands that read the triggers, so a
    newly added trigger is never silently missing. Importing nudge never runs it.
    """
    if MANIFEST.exists() and MANIFEST.stat().st_mtime >= _newest_source_mtime():
        return MANIFEST
    # The webserver, the daemon and `nudge run` may all load at once: one parses, the others
    # wait and then find the manifest fresh (two parses would write it at the same time).
    TARGET_DIR.mkdir(parents=True, exist_ok=True)
    with open(TARGET_DIR / ".parse.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if MANIFEST.exists() and MANIFEST.stat().st_mtime >= _newest_source_mtime():
            return MANIFEST
        result = subprocess.run(
            [dbt_executable(), "parse", "--quiet"],
            cwd=DBT_PROJECT_DIR,
            env=dbt_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DbtBuildError(
                "dbt parse failed: " + (_errors(result.stdout) or result.stderr[-2000:])
            )
    return MANIFEST


# The tick's instant reaches dbt in this environment variable (dbt/macros/as_of.sql), not in
# --vars: new vars make dbt re-parse the whole project, an environment variable read only at
# execution does not, so every tick reuses the saved partial parse.
AS_OF_ENV = "NUDGE_AS_OF"
# The environment is the process's: two threads pinning different instants at once would race.
_ENV_LOCK = threading.Lock()


def build_args(*, full_refresh: bool = False, write_json: bool = False) -> list[str]:
    """The tick's one ``dbt build``. Unit tests run in CI, not on every production tick.
    ``full_refresh`` rebuilds the incremental models from the whole history.

    ``--no-write-json``: nothing reads a tick's ``manifest.json`` (written twice per build),
    ``semantic_manifest.json`` or ``run_results.json`` (dagster-dbt reads the structured log
    it streams, and a successful build's folder is deleted), and writing them cost about half
    a second of every tick. A failed build keeps its ``dbt.log`` and compiled SQL. The saved
    partial parse is written either way. ``write_json`` writes them (the tick bench reads
    ``run_results.json``)."""
    return [
        "build",
        *([] if write_json else ["--no-write-json"]),
        "--exclude-resource-type",
        "unit_test",
        *(["--full-refresh"] if full_refresh else []),
    ]


@contextlib.contextmanager
def as_of_environment(as_of: str, extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """``NUDGE_AS_OF`` set to ``as_of`` (and ``extra``: the PostgreSQL target's variables)
    while a dbt subprocess is started (dagster-dbt copies this process's environment into it),
    then restored."""
    values = {AS_OF_ENV: as_of, **(extra or {})}
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def build_target(name: str) -> Path:
    """A target folder of its own for one build of the tick (``dbt/target/<name>-<random>``,
    under ``DBT_TARGET_PATH`` when set, as dagster-dbt places them): compiled SQL, logs and
    artifacts, removed after a successful build."""
    root = Path(os.environ.get("DBT_TARGET_PATH") or "target")
    return DBT_PROJECT_DIR / root / f"{name}-{uuid.uuid4().hex[:7]}"


def parse_cache(warehouse: Path, kind: str = "") -> Path:
    """Where dbt's partial parse for one warehouse is kept between builds:
    ``<warehouse>.dbt-parse.msgpack`` for the tick, ``<warehouse>.<kind>.dbt-parse.msgpack``
    for builds parsed with other vars (``preview``), beside the DuckDB file (or, for
    PostgreSQL, the local name of the database) like its lock and journal.

    dbt parses the whole project again (4-9 s) when the saved parse was made under another
    profile or other vars, and the profile includes the warehouse (the DuckDB path, the
    PostgreSQL database). The project's own ``dbt/target/partial_parse.msgpack`` is whatever
    was parsed last, by any warehouse or tool (``dbt parse``, sqlfluff, another warehouse's
    tick), and each build's fresher copy went away with its target folder: so every tick could
    parse in full. Kept per warehouse, only the first build on a warehouse does (and the first
    after a change to the profile, ``dbt_project.yml`` or dbt's version, which dbt checks for
    itself).
    """
    suffix = f".{kind}" if kind else ""
    return warehouse.with_name(f"{warehouse.name}{suffix}.dbt-parse.msgpack")


def seed_parse(cache: Path, target: Path) -> None:
    """Put the warehouse's saved parse where the build in ``target`` will look for it. dbt
    checks it against the project and the profile and parses what changed (everything, if
    it is unreadable), so a stale or damaged copy costs a parse, never a wrong build."""
    if not cache.is_file():
        return
    try:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache, target / PARTIAL_PARSE)
    except OSError as exc:  # a cache: the build parses in full
        log.warning("could not reuse dbt's saved parse %s: %s", cache, exc)


def keep_parse(target: Path, cache: Path) -> None:
    """Save the parse of the build in ``target`` for the warehouse's next build, whether the
    build passed or not: dbt writes its parse before it runs anything, and a parse that failed
    leaves the seeded copy. Replaced whole (a build starting meanwhile reads the old copy or
    the new one, never half)."""
    saved = target / PARTIAL_PARSE
    if not saved.is_file():
        return
    temporary = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saved, temporary)
        os.replace(temporary, cache)
    except OSError as exc:  # a cache: the next build parses in full
        log.warning("could not save dbt's parse to %s: %s", cache, exc)
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def seeded_target(name: str, cache: Path) -> Iterator[Path]:
    """A target folder of this build's own (:func:`build_target`) holding the warehouse's
    saved parse (``cache``), so dbt parses only what changed since its last build there. When
    the block ends the build's parse is saved for the next (whatever the build's outcome), or,
    if dbt never started there (nothing but the seeded parse in it), the folder is removed.
    The caller removes the folder of a build that succeeded; a failed one keeps it, with the
    ``dbt.log`` and compiled SQL one debugs it with."""
    target = build_target(name)
    seed_parse(cache, target)
    try:
        yield target
    finally:
        if target.is_dir() and any(p.name != PARTIAL_PARSE for p in target.iterdir()):
            keep_parse(target, cache)
        else:
            shutil.rmtree(target, ignore_errors=True)


def run_dbt(
    warehouse: Path | Settings,
    args: list[str],
    as_of: str,
    *,
    schema_prefix: str = "",
    select: str = "+tag:nudge_audience",
    target: Path | None = None,
) -> None:
    """One dbt command for the models up to the eligibility tables, at ``as_of``.

    Not dbt's in-process runner: dbt-duckdb keeps its connection to the file open for the life
    of the process, which would lock the warehouse against the next tick's dbt. ``schema_prefix``
    builds into prefixed schemas (``preview_``) with its own target path, so the live job's
    manifest keeps the real schemas; ``target`` overrides that path (:func:`seeded_target`).
    """
    # The prefix shapes the schemas dbt parses into, so it is a var; the instant is not (see
    # AS_OF_ENV): replaying an hour after another re-uses the replay's saved partial parse.
    dbt_vars: dict[str, Any] = {"schema_prefix": schema_prefix} if schema_prefix else {}
    target = target or target_path(schema_prefix)
    result = subprocess.run(
        [
            dbt_executable(),
            *args,
            *(["--vars", json.dumps(dbt_vars)] if dbt_vars else []),
            "--select",
            select,
            "--target-path",
            str(target),
        ],
        cwd=DBT_PROJECT_DIR,
        env={**dbt_env(warehouse), AS_OF_ENV: as_of},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DbtBuildError(
            f"dbt {args[0]} failed for as_of {as_of}: "
            + (_errors(result.stdout) or result.stderr[-2000:])
        )


def target_path(schema_prefix: str = "") -> Path:
    """Where a preview (``preview_``) or a replay keeps its own compiled project."""
    return TARGET_DIR / (schema_prefix.strip("_") or "replay")


def _errors(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if "Error" in line or "error" in line]
    return "\n".join(lines[-10:])
