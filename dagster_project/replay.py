"""Replaying ticks fast: the dbt models compiled once and executed per tick, then every send.

Backtests and the simulated-week test replay many hourly ticks. Running ``dbt build`` for each
would cost dbt's start-up and parse (about 3 s) per tick; :class:`CompiledModels` pays it once.
The live job always runs real ``dbt build`` (with its data tests) through Dagster.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from .config import ConfigError, Settings
from .dbt_runner import REPORTING_TAG, DbtBuildError, run_dbt, target_path
from .dispatch import dispatch_trigger
from .policy import DispatchPolicy
from .providers import Provider
from .rendering import Renderer
from .runs import TriggerSummary
from .triggers import ProjectRelations, TriggerSpec, higher_priority
from .warehouse import (
    MISSING_RELATION_ERRORS,
    Connection,
    one,
    open_warehouse,
    quote_relation,
    sql_for,
)


class CompiledModels:
    """The models for replays: compiled by dbt once, then executed per tick in the warehouse.

    Every model reads time only through the ``as_of()`` macro, which renders the instant as a
    literal; the project is compiled once with a sentinel instant and each tick substitutes its
    own. That is the SQL ``dbt run`` would execute, without dbt's parse and start-up per tick.
    dbt compiles for the warehouse's engine (its target), so the SQL is that engine's.
    """

    SENTINEL = "1970-01-01T00:00:00.424242+00:00"

    def __init__(self, warehouse: Path | Settings) -> None:
        target = target_path()
        target.mkdir(parents=True, exist_ok=True)
        # One compile at a time into the shared replay target (two backtests at once would
        # write its manifest together); each reads what it compiled before letting go.
        with open(target / ".compile.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            # --full-refresh: the incremental models' full-build SQL, so each replayed hour
            # rebuilds them from the whole history at its own instant.
            if isinstance(warehouse, Settings) and warehouse.postgres is not None:
                # On PostgreSQL the eligibility models' SQL depends on the columns of the built
                # trigger models (macros/sequence.sql), and the models call helper functions
                # the project's on-run-start hook creates; `dbt compile` builds nothing and
                # runs no hooks. So one real run first (at the sentinel instant: cheap).
                run_dbt(warehouse, ["run", "--quiet", "--full-refresh"], self.SENTINEL)
            run_dbt(warehouse, ["compile", "--quiet", "--full-refresh"], self.SENTINEL)
            manifest = json.loads((target / "manifest.json").read_text())
        # What a tick builds: the reporting models are the daily job's (defs/dbt.py), and
        # rebuilding them over the whole history every replayed hour would only cost time.
        nodes = {
            uid: node
            for uid, node in manifest["nodes"].items()
            if node["resource_type"] == "model"
            and node.get("compiled_code")
            and REPORTING_TAG not in node.get("tags", [])
        }
        self.models: list[tuple[str, str, str]] = []  # (kind, relation, sql) in build order
        done: set[str] = set()

        def visit(uid: str) -> None:
            if uid in done or uid not in nodes:
                return
            done.add(uid)
            for parent in nodes[uid]["depends_on"]["nodes"]:
                visit(parent)
            node = nodes[uid]
            kind = "view" if node["config"]["materialized"] == "view" else "table"
            relation = quote_relation(f"{node['schema']}.{node.get('alias') or node['name']}")
            self.models.append((kind, relation, node["compiled_code"]))

        for uid in sorted(nodes):
            visit(uid)
        if not any(self.SENTINEL in code for _, _, code in self.models):
            raise DbtBuildError("the compiled models do not read as_of(); cannot replay them")

    def build(self, con: Connection, as_of: datetime) -> None:
        instant = as_of.isoformat()
        create_schema = sql_for(con, "warehouse/create_schema")
        create_model = sql_for(con, "warehouse/create_model")
        for kind, relation, code in self.models:
            schema = relation.split(".")[0]
            con.execute(create_schema.format(schema=schema))
            con.execute(
                create_model.format(
                    kind=kind, relation=relation, code=code.replace(self.SENTINEL, instant)
                )
            )


def _refuse_a_live_warehouse(con: Connection) -> None:
    """A replay drops and rebuilds every model, without the warehouse's lock: only on a copy (a
    backtest's scratch file) or a database of its own, never on one a tick has run on."""
    try:
        found = one(con, sql_for(con, "reports/last_tick"))
    except MISSING_RELATION_ERRORS:
        return
    if found and found[0] is not None:
        raise ConfigError(
            f"a tick ran on this warehouse (last at {found[0]}): replays rebuild every model, "
            "so they run on a copy (as nudge backtest does) or a database of their own"
        )


def hourly(start: datetime, end: datetime) -> list[datetime]:
    """Every whole hour from ``start`` (rounded up) to ``end``."""
    first = start.replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += timedelta(hours=1)
    ticks = []
    tick = first
    while tick <= end:
        ticks.append(tick)
        tick += timedelta(hours=1)
    return ticks


OnTick = Callable[[int, datetime, Connection, list[TriggerSummary]], None]


def replay(
    warehouse: Path | Settings,
    ticks: Sequence[datetime],
    *,
    provider: Provider,
    specs: Sequence[TriggerSpec],
    relations: ProjectRelations,
    policy: DispatchPolicy,
    from_email: str,
    on_tick: OnTick | None = None,
) -> None:
    """Run ticks one after another: the models at the tick's instant, then every send step.

    The same dbt models (see :class:`CompiledModels`) and the same ``dispatch_trigger`` as the
    hourly job, without Dagster's and dbt's per-run overhead; triggers go highest priority
    first, as their cap slots do live. The ledger must exist.
    """
    with contextlib.closing(open_warehouse(warehouse)) as con:
        _refuse_a_live_warehouse(con)
    models = CompiledModels(warehouse)
    renderer = Renderer()
    ordered = sorted(specs, key=lambda s: (s.priority, s.name), reverse=True)
    for i, tick in enumerate(ticks, start=1):
        con = open_warehouse(warehouse)
        try:
            models.build(con, tick)
            summaries = [
                dispatch_trigger(
                    con,
                    spec,
                    provider=provider,
                    renderer=renderer,
                    as_of=tick,
                    run_id=f"replay-{tick:%Y%m%dT%H%M}",
                    from_email=from_email,
                    policy=policy,
                    relations=relations,
                    consent_cutoff=tick,
                    competitors=[o.relation for o in higher_priority(spec, ordered)],
                )
                for spec in ordered
            ]
            if on_tick:
                on_tick(i, tick, con, summaries)
        finally:
            con.close()
