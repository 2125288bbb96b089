"""Seeing before sending: ``nudge preview``, ``nudge render`` and ``nudge backtest``.

None of them sends or writes the ledger:

* preview and render build the dbt models for the chosen instant into ``preview_*`` schemas
  (var ``schema_prefix``), so the tables the live tick sends from are never touched, then run
  the real planning step inside a transaction that is always rolled back;
* backtest copies the raw tables into a scratch DuckDB file with an empty ledger and replays
  hourly ticks there with the real dbt models and the real send step, through a provider that
  accepts every message and delivers none.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from . import ledger
from .config import DBT_PROJECT_DIR, ConfigError, Settings
from .dispatch import DispatchPolicy, TriggerSummary, dispatch_trigger
from .guards import GuardPolicy
from .masking import mask_email
from .providers import Message, Provider, ProviderLimits, SendResult
from .rendering import Renderer, RenderError
from .triggers import ProjectRelations, TriggerSpec, higher_priority
from .warehouse import connect, quote_relation, warehouse_lock

log = logging.getLogger(__name__)

PREVIEW_PREFIX = "preview_"
RAW_TABLES = ("customers", "events", "subscriptions")


class DbtBuildError(RuntimeError):
    """dbt could not build the models for a preview or backtest tick."""


def project_triggers() -> tuple[list[TriggerSpec], ProjectRelations]:
    """The project's triggers and relations, from the dbt manifest (parsed if stale)."""
    from .dbt_assets import ensure_manifest
    from .triggers import project_relations, triggers_from_manifest

    manifest = ensure_manifest()
    return triggers_from_manifest(manifest), project_relations(manifest)


def _configured_policy(settings: Settings) -> DispatchPolicy:
    """The send policy of the live job (frequency caps, retries, ...) from NUDGE_* settings."""
    from .resources import SendPolicyResource

    return SendPolicyResource(**settings.send_policy).policy(batch_size=100)


def find_trigger(triggers: Sequence[TriggerSpec], name: str) -> TriggerSpec:
    for spec in triggers:
        if spec.name == name:
            return spec
    raise ConfigError(
        f"no trigger named {name!r}; the project has: {', '.join(s.name for s in triggers)}"
    )


def _dbt(warehouse: Path, args: list[str], as_of: str, *, schema_prefix: str = "") -> None:
    """One dbt command in a subprocess, as the live job runs it.

    Not dbt's in-process runner: dbt-duckdb keeps its connection to the file open for the
    life of the process, which would lock the warehouse against the next tick's dbt.
    """
    from .dbt_assets import dbt_executable

    dbt_vars: dict[str, Any] = {"as_of": as_of}
    if schema_prefix:
        dbt_vars["schema_prefix"] = schema_prefix
    target = DBT_PROJECT_DIR / "target" / (schema_prefix.strip("_") or "replay")
    result = subprocess.run(
        [
            dbt_executable(),
            *args,
            "--vars",
            json.dumps(dbt_vars),
            "--select",
            "+tag:nudge_audience",
            # Its own target path: the live job's manifest must keep the real schemas.
            "--target-path",
            str(target),
        ],
        cwd=DBT_PROJECT_DIR,
        env={
            **os.environ,
            "NUDGE_WAREHOUSE": str(warehouse),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        errors = [line for line in result.stdout.splitlines() if "Error" in line or "error" in line]
        raise DbtBuildError(
            f"dbt {args[0]} failed for as_of {as_of}: "
            + ("\n".join(errors[-10:]) or result.stderr[-2000:])
        )


class CompiledModels:
    """The models for replays: compiled by dbt once, then executed per tick in DuckDB.

    Every model reads time only through the ``as_of()`` macro, which renders the instant as a
    literal; the project is compiled once with a sentinel instant and each tick substitutes its
    own. That is the SQL ``dbt run`` would execute, without dbt's parse and start-up per tick
    (about 3 s), which is what makes a week of hourly ticks affordable. The live job always
    runs real ``dbt build`` (with its data tests); only replays (backtest, the simulated-week
    test) use this.
    """

    SENTINEL = "1970-01-01T00:00:00.424242+00:00"

    def __init__(self, warehouse: Path) -> None:
        _dbt(warehouse, ["compile", "--quiet"], self.SENTINEL)
        target = DBT_PROJECT_DIR / "target" / "replay"
        manifest = json.loads((target / "manifest.json").read_text())
        nodes = {
            uid: node
            for uid, node in manifest["nodes"].items()
            if node["resource_type"] == "model" and node.get("compiled_code")
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

    def build(self, con: duckdb.DuckDBPyConnection, as_of: datetime) -> None:
        instant = as_of.isoformat()
        for kind, relation, code in self.models:
            schema = relation.split(".")[0]
            con.execute(f"create schema if not exists {schema}")
            con.execute(
                f"create or replace {kind} {relation} as (\n"
                f"{code.replace(self.SENTINEL, instant)}\n)"
            )


# --------------------------------------------------------------------------------------------
# preview
# --------------------------------------------------------------------------------------------


@dataclass
class Preview:
    trigger: str
    as_of: str
    # (step, variant or "", decision) -> count, decision being planned/deferred/holdout/skipped
    decisions: dict[str, int] = field(default_factory=dict)
    # step -> exclusion reason -> count, for the rows not due or excluded at as_of
    excluded: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "as_of": self.as_of,
            "decisions": self.decisions,
            "excluded": self.excluded,
            "samples": self.samples,
        }


@contextmanager
def _preview_tables(settings: Settings, as_of: datetime) -> Iterator[duckdb.DuckDBPyConnection]:
    """Build every model for ``as_of`` into the preview schemas; yield a connection."""
    with warehouse_lock(settings.warehouse):
        con = connect(settings.warehouse)
        try:
            ledger.ensure_ledger(con)
        finally:
            con.close()
        _dbt(
            settings.warehouse, ["run", "--quiet"], as_of.isoformat(), schema_prefix=PREVIEW_PREFIX
        )
        con = connect(settings.warehouse)
        try:
            yield con
        finally:
            con.close()


def preview(settings: Settings, trigger: str, as_of: datetime, *, samples: int = 3) -> Preview:
    """Who would get which step at ``as_of``, why others would not, and rendered samples."""
    triggers, _ = project_triggers()
    spec = find_trigger(triggers, trigger)
    relation = PREVIEW_PREFIX + spec.relation
    policy = _configured_policy(settings)
    higher = [PREVIEW_PREFIX + other.relation for other in higher_priority(spec, triggers)]
    result = Preview(trigger=spec.name, as_of=as_of.isoformat())
    renderer = Renderer()
    with _preview_tables(settings, as_of) as con:
        table = quote_relation(relation)
        for step, reason, count in con.execute(
            f"""
            select step, exclusion_reason, count(*) from {table}
            where exclusion_reason is not null
            group by all order by step, exclusion_reason
            """
        ).fetchall():
            result.excluded.setdefault(step, {})[reason] = count
        # The real planning step, in a transaction that is always rolled back.
        with ledger.planning(
            con,
            eligibility=relation,
            run_id="preview",
            as_of=as_of,
            provider="preview",
            cap_policy=spec.sequence.cap_policy,
            caps=policy.caps,
            competitors=higher,
        ) as decision:
            for step, variant, status, reason, count in con.execute(
                """
                select step, variant, decided_status, decided_reason, count(*)
                from plan_decisions group by all order by all
                """
            ).fetchall():
                key = "/".join(p for p in (step, variant) if p) + f": {status}"
                if reason:
                    key += f" ({reason})"
                result.decisions[key] = count
            rows = con.execute(
                """
                select send_id, cast(to_json(plan_decisions) as varchar)
                from plan_decisions where decided_status = 'planned'
                order by due_at, send_id limit $n
                """,
                {"n": samples},
            ).fetchall()
            decision.hold()
    for send_id, context_json in rows:
        context = json.loads(context_json)
        try:
            email = renderer.render(context["template"], context)
            result.samples.append(
                {
                    "send_id": send_id,
                    "step": context["step"],
                    "to": mask_email(context.get("email") or ""),
                    "subject": email.subject,
                    "text": email.text,
                }
            )
        except RenderError as exc:
            result.samples.append({"send_id": send_id, "error": str(exc)})
    return result


# --------------------------------------------------------------------------------------------
# render
# --------------------------------------------------------------------------------------------


@dataclass
class RenderedFiles:
    send_id: str
    exclusion_reason: str | None
    due_at: str
    files: list[Path]


def render_for_customer(
    settings: Settings,
    *,
    trigger: str,
    step: str,
    customer_id: str,
    as_of: datetime,
    out_dir: Path,
    variant: str | None = None,
) -> RenderedFiles:
    """Write the email one customer would get for one step as HTML, text and headers files."""
    triggers, _ = project_triggers()
    spec = find_trigger(triggers, trigger)
    steps = {s.name: s for s in spec.steps}
    if step not in steps:
        raise ConfigError(f"trigger {trigger} has no step {step!r}; its steps: {spec.step_names}")
    if variant and variant not in {v.name for v in steps[step].variants}:
        raise ConfigError(f"step {trigger}/{step} has no variant {variant!r}")
    relation = quote_relation(PREVIEW_PREFIX + spec.relation)
    with _preview_tables(settings, as_of) as con:
        found = con.execute(
            f"""
            select send_id, exclusion_reason, due_at, cast(to_json(e) as varchar)
            from {relation} as e
            where customer_id = $customer and step = $step
            order by is_eligible desc, due_at desc
            limit 1
            """,
            {"customer": customer_id, "step": step},
        ).fetchone()
    if found is None:
        raise ConfigError(
            f"customer {customer_id} has no {trigger}/{step} step around {as_of.isoformat()} "
            f"(not an entry of the trigger, or outside the eligibility window); try --as-of "
            f"an instant near when the step is due"
        )
    send_id, reason, due_at, context_json = found
    context = json.loads(context_json)
    template = context["template"]
    if variant:
        template = next(v.template for v in steps[step].variants if v.name == variant)
    email = Renderer().render(template, context)
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = [
        f"From: {settings.from_email}",
        f"To: {context.get('email') or ''}",
        f"Subject: {email.subject}",
        f"X-Nudge-Send-Id: {send_id}",
        f"X-Nudge-Trigger: {trigger}",
        f"X-Nudge-Step: {step}",
        f"X-Nudge-Template: {template}",
    ]
    files = [out_dir / "email.html", out_dir / "email.txt", out_dir / "headers.txt"]
    files[0].write_text(email.html)
    files[1].write_text(email.text)
    files[2].write_text("\n".join(headers) + "\n")
    return RenderedFiles(send_id, reason, due_at.isoformat(), files)


# --------------------------------------------------------------------------------------------
# backtest
# --------------------------------------------------------------------------------------------


class DryRunProvider:
    """Accepts every message and delivers none: the backtest's ESP."""

    name = "backtest"
    limits = ProviderLimits(max_batch=1000, idempotent=True)

    def send(
        self, messages: Sequence[Message], *, idempotency_key: str | None = None
    ) -> list[SendResult]:
        return [
            SendResult(send_id=m.send_id, status="sent", provider_message_id=f"dry-{m.send_id}")
            for m in messages
        ]

    def close(self) -> None:
        pass


@dataclass
class Backtest:
    start: str
    end: str
    triggers: list[str]
    ticks: int = 0
    # One row per (day, trigger, step, outcome): outcome is sent, holdout, deferred,
    # skipped:<reason>, expired, failed..., or excluded:<reason> for due steps the rules kept out.
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "triggers": self.triggers,
            "ticks": self.ticks,
            "rows": self.rows,
        }


def hourly(start: datetime, end: datetime) -> list[datetime]:
    first = start.replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += timedelta(hours=1)
    ticks = []
    tick = first
    while tick <= end:
        ticks.append(tick)
        tick += timedelta(hours=1)
    return ticks


def replay(
    warehouse: Path,
    ticks: Sequence[datetime],
    *,
    provider: Provider,
    specs: Sequence[TriggerSpec],
    relations: ProjectRelations,
    policy: DispatchPolicy,
    from_email: str,
    on_tick: Callable[[int, datetime, duckdb.DuckDBPyConnection, list[TriggerSummary]], None]
    | None = None,
) -> None:
    """Run ticks one after another: the models at the tick's instant, then every send step.

    The same dbt models (see :class:`CompiledModels`) and the same ``dispatch_trigger`` as the
    hourly job, without Dagster's and dbt's per-run overhead; triggers go highest priority
    first, as their cap slots do live.
    """
    models = CompiledModels(warehouse)
    renderer = Renderer()
    ordered = sorted(specs, key=lambda s: (s.priority, s.name), reverse=True)
    for i, tick in enumerate(ticks, start=1):
        con = connect(warehouse)
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


def backtest(
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    triggers: Sequence[str] = (),
    progress: Callable[[int, int, datetime], None] | None = None,
    scratch_dir: Path | None = None,
) -> Backtest:
    """Replay hourly ticks from ``start`` to ``end`` against a scratch copy; report volumes."""
    if end < start:
        raise ConfigError("--to must not be before --from")
    ticks = hourly(start, end)
    if not ticks:
        raise ConfigError("no hourly tick between --from and --to")
    all_specs, relations = project_triggers()
    specs = [find_trigger(all_specs, t) for t in triggers] if triggers else all_specs
    names = {s.name for s in specs}
    owned = scratch_dir is None
    folder = Path(scratch_dir) if scratch_dir else Path(tempfile.mkdtemp(prefix="nudge-backtest-"))
    scratch = folder / "backtest.duckdb"
    excluded: dict[tuple[str, str, str, str], int] = {}

    def count_exclusions(
        i: int, tick: datetime, con: duckdb.DuckDBPyConnection, _: list[TriggerSummary]
    ) -> None:
        for spec in specs:
            # Steps that fell due in this hour and that the rules kept out.
            for step, reason, count in con.execute(
                f"""
                select step, rule_exclusion_reason, count(*)
                from {quote_relation(spec.relation)}
                where
                    due_at > $previous and due_at <= $tick
                    and ledger_status is null
                    and rule_exclusion_reason is not null
                    and rule_exclusion_reason not in (
                        'holdout', 'control_group', 'condition_not_met'
                    )
                group by all
                """,
                {"previous": tick - timedelta(hours=1), "tick": tick},
            ).fetchall():
                key = (tick.date().isoformat(), spec.name, step, f"excluded:{reason}")
                excluded[key] = excluded.get(key, 0) + count
        if progress:
            progress(i, len(ticks), tick)

    try:
        _copy_raw(settings.warehouse, scratch)
        replay(
            scratch,
            ticks,
            provider=DryRunProvider(),
            specs=specs,
            relations=relations,
            # Guards would hold the backlog of the first tick: a backtest wants the volume.
            policy=replace(
                _configured_policy(settings),
                guards=GuardPolicy(approved=frozenset(names)),
                paused=frozenset(),
            ),
            from_email=settings.from_email,
            on_tick=count_exclusions,
        )
        con = connect(scratch)
        try:
            outcomes = con.execute(
                """
                select
                    cast(cast(coalesce(sent_as_of, as_of) as date) as varchar) as day,
                    trigger,
                    step,
                    case
                        when status in ('skipped', 'deferred') and reason is not null
                            then status || ':' || reason
                        else status
                    end as outcome,
                    count(*)
                from nudge.send_ledger
                group by all
                """
            ).fetchall()
        finally:
            con.close()
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
    report = Backtest(
        start=ticks[0].isoformat(),
        end=ticks[-1].isoformat(),
        triggers=sorted(names),
        ticks=len(ticks),
    )
    merged = {(d, t, s, o): n for d, t, s, o, n in outcomes}
    merged.update(excluded)
    report.rows = [
        {"day": d, "trigger": t, "step": s, "outcome": o, "count": n}
        for (d, t, s, o), n in sorted(merged.items())
    ]
    return report


def _copy_raw(warehouse: Path, scratch: Path) -> None:
    """The raw tables of the input contract, copied into a fresh file with an empty ledger."""
    if not warehouse.exists():
        raise ConfigError(f"{warehouse} does not exist; point NUDGE_WAREHOUSE at your warehouse")
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.unlink(missing_ok=True)
    with warehouse_lock(warehouse):
        con = connect(scratch)
        try:
            con.execute(f"attach '{warehouse}' as source (read_only)")
            con.execute("create schema raw")
            for table in RAW_TABLES:
                con.execute(f"create table raw.{table} as select * from source.raw.{table}")
            con.execute("detach source")
            ledger.ensure_ledger(con)
        except duckdb.CatalogException as exc:
            raise ConfigError(f"{warehouse} lacks the raw input tables: {exc}") from exc
        finally:
            con.close()


def format_backtest(report: Backtest) -> str:
    """Per day: each trigger and step's sends, holdouts, capped and excluded steps by reason."""
    lines = [
        f"backtest {report.start} .. {report.end}: {report.ticks} hourly ticks, "
        f"triggers {', '.join(report.triggers)} (nothing was sent)",
    ]
    day = None
    for row in report.rows:
        if row["day"] != day:
            day = row["day"]
            lines.append(f"\n{day}")
        lines.append(
            f"  {row['trigger']:<22} {row['step']:<18} {row['outcome']:<40} {row['count']:>6}"
        )
    totals: dict[str, int] = {}
    for row in report.rows:
        if row["outcome"] == "sent":
            totals[row["trigger"]] = totals.get(row["trigger"], 0) + row["count"]
    lines.append(
        "\nsent per trigger: "
        + (", ".join(f"{t} {n}" for t, n in sorted(totals.items())) or "none")
    )
    return "\n".join(lines)
