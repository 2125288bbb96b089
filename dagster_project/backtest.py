"""``nudge backtest``: what the triggers would have sent over a past span, sending nothing.

The raw tables are copied into a scratch DuckDB file with an empty ledger (from a DuckDB file
or, in one snapshot, from a PostgreSQL database), and hourly ticks are replayed there
(``replay.py``) with the real models and the real send step, through a provider that accepts
every message and delivers none. The report counts, per day, trigger and step, what was sent,
held out, deferred, skipped, and which due steps the rules kept out and why.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from . import ledger
from .config import ConfigError, Settings
from .policy import DispatchPolicy, GuardPolicy
from .postgres import DIALECT, PostgresConnection, PostgresSettings, duckdb_type, quote_identifier
from .providers.dryrun import DryRunProvider
from .replay import hourly, replay
from .runs import TriggerSummary
from .triggers import find_trigger, project_triggers
from .warehouse import (
    RAW_TABLES,
    Connection,
    check_input_contract,
    connection,
    quote_relation,
    sql,
    sql_literal,
    warehouse_lock,
)


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
        return asdict(self)


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

    def count_exclusions(i: int, tick: datetime, con: Connection, _: list[TriggerSummary]) -> None:
        for spec in specs:
            for step, reason, count in con.execute(
                sql("reports/backtest_exclusions").format(
                    eligibility=quote_relation(spec.relation)
                ),
                {"previous": tick - timedelta(hours=1), "tick": tick},
            ).fetchall():
                key = (tick.date().isoformat(), spec.name, step, f"excluded:{reason}")
                excluded[key] = excluded.get(key, 0) + count
        if progress:
            progress(i, len(ticks), tick)

    try:
        _copy_raw(settings, scratch)
        replay(
            scratch,
            ticks,
            provider=DryRunProvider(),
            specs=specs,
            relations=relations,
            # Guards would hold the backlog of the first tick: a backtest wants the volume.
            policy=replace(
                DispatchPolicy.from_values(settings.send_policy),
                guards=GuardPolicy(approved=frozenset(names)),
                paused=frozenset(),
            ),
            from_email=settings.from_email,
            on_tick=count_exclusions,
        )
        with connection(scratch) as con:
            outcomes = con.execute(sql("reports/backtest_outcomes")).fetchall()
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


def _copy_raw(settings: Settings, scratch: Path) -> None:
    """The raw tables of the input contract, copied into a fresh file with an empty ledger."""
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.unlink(missing_ok=True)
    if settings.postgres is not None:
        _copy_raw_from_postgres(settings.postgres, scratch)
    else:
        _copy_raw_from_duckdb(settings.warehouse, scratch)
    with connection(scratch) as con:
        ledger.ensure_ledger(con)


def _copy_raw_from_duckdb(warehouse: Path, scratch: Path) -> None:
    if not warehouse.exists():
        raise ConfigError(f"{warehouse} does not exist; point NUDGE_WAREHOUSE at your warehouse")
    with warehouse_lock(warehouse), connection(scratch) as con:
        try:
            con.execute(sql("warehouse/attach_source").format(path=sql_literal(str(warehouse))))
            con.execute(sql("warehouse/create_raw_schema"))
            for table in RAW_TABLES:
                con.execute(sql("warehouse/copy_raw").format(table=table))
            con.execute(sql("warehouse/detach_source"))
        except duckdb.CatalogException as exc:
            raise ConfigError(f"{warehouse} lacks the raw input tables: {exc}") from exc


def _copy_raw_from_postgres(postgres: PostgresSettings, scratch: Path) -> None:
    """The raw tables of a PostgreSQL database, streamed through CSV files beside ``scratch``.

    One read-only snapshot for the three: a loader writing meanwhile cannot leave an event in
    the copy whose customer is not. Nothing is written to the database and nudge's lock is not
    taken (a tick may run meanwhile; PostgreSQL's share locks on the raw tables last until the
    copy ends). PostgreSQL's column types become DuckDB's
    (``postgres.duckdb_type``), so the models read the copy as they read the database.
    """
    import psycopg2

    try:
        source = PostgresConnection(postgres)
    except psycopg2.Error as exc:
        raise ConfigError(f"cannot connect to {postgres.url}: {str(exc).strip()}") from exc
    try:
        check_input_contract(source, postgres.url)
        source.begin_snapshot()
        with connection(scratch) as con:
            con.execute(sql("warehouse/create_raw_schema"))
            for table in RAW_TABLES:
                columns = source.execute(
                    sql("warehouse/raw_columns", DIALECT), {"table_name": table}
                ).fetchall()
                con.execute(
                    sql("warehouse/create_raw_table").format(
                        table=table,
                        column_definitions=", ".join(
                            f"{quote_identifier(name)} {duckdb_type(kind)}"
                            for name, kind in columns
                        ),
                    )
                )
                rows = scratch.with_name(f"{scratch.stem}.raw.{table}.csv")
                try:
                    with open(rows, "wb") as handle:
                        source.copy_out(
                            sql("warehouse/copy_raw_out", DIALECT).format(
                                table=table,
                                column_list=", ".join(
                                    _copied_column(name, kind) for name, kind in columns
                                ),
                            ),
                            handle,
                        )
                    con.execute(
                        sql("warehouse/load_raw_csv").format(
                            table=table, path=sql_literal(str(rows))
                        )
                    )
                except duckdb.Error as exc:
                    # The first line only: DuckDB's next ones quote the row, a person's data.
                    first = str(exc).strip().splitlines()[0]
                    raise ConfigError(
                        f"could not load raw.{table} of {postgres.url} into the backtest's "
                        f"copy: {first}"
                    ) from None
                finally:
                    rows.unlink(missing_ok=True)
        source.rollback()
    except psycopg2.Error as exc:
        raise ConfigError(
            f"could not copy the raw tables from {postgres.url}: {str(exc).strip()}"
        ) from exc
    finally:
        source.close()


# PostgreSQL writes an instant before year 1 as "0044-03-15 10:00:00 BC", which DuckDB's CSV
# reader takes for 44 AD without a word; DuckDB spells it "0044-03-15 (BC) 10:00:00". Only
# such values are rewritten (the comparison is cheap; -infinity matches and is left as it is).
_INSTANT_TEXT = (
    "case when {column} < '0001-01-01' then regexp_replace(cast({column} as text),"
    " '^(\\S+)(.*) BC$', '\\1 (BC)\\2') else cast({column} as text) end"
)


def _copied_column(name: str, postgres_type: str) -> str:
    """The expression that writes one column into the CSV file DuckDB reads."""
    column = quote_identifier(name)
    if duckdb_type(postgres_type) in ("date", "timestamp", "timestamptz"):
        return _INSTANT_TEXT.format(column=column)
    return column


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
