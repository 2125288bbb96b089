"""``nudge demo``: a synthetic warehouse, then the last days replayed through the real job.

The data comes from ``demo_data.py``; each tick is a real ``nudge run`` of the Dagster job
(``tick.py``) at a past instant, so sequences visibly move from step to step in minutes. On
PostgreSQL the data is generated into a scratch DuckDB file and loaded into schema ``raw`` of
the database, as a shop's loader would put it there; the ticks then run on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from . import ledger
from .config import ConfigError, Settings
from .demo_data import generate_demo_warehouse
from .postgres import locked_session, quote_identifier
from .privacy import dbt_schemas
from .warehouse import (
    DATABASE_ERRORS,
    Connection,
    connect,
    connection,
    copy_into_postgres,
    one,
    sql,
    sql_for,
    warehouse_lock,
)

# A table only `nudge demo` creates: a warehouse with it may be replaced by the next demo.
DEMO_MARKER = "nudge_demo"


def prepare_demo_warehouse(settings: Settings, *, customers: int, end: datetime, seed: int) -> str:
    """Create a fresh demo warehouse, refusing to overwrite one the demo did not create.

    Returns a line saying what was generated.
    """
    if settings.postgres is not None:
        counts = _prepare_postgres(settings, customers=customers, end=end, seed=seed)
        where = settings.postgres.url
    else:
        counts = _prepare_duckdb(settings, customers=customers, end=end, seed=seed)
        where = str(settings.warehouse)
    return (
        f"demo warehouse {where}: {counts['customers']} customers, "
        f"{counts['events']} events, {counts['subscriptions']} consent changes (with bad rows)"
    )


def _prepare_duckdb(
    settings: Settings, *, customers: int, end: datetime, seed: int
) -> dict[str, int]:
    # One hold of the lock from the check to the marker: no tick opens the file in between.
    with warehouse_lock(settings.warehouse):
        if settings.warehouse.exists():
            checked = duckdb.connect(str(settings.warehouse), read_only=True)
            try:
                _refuse_unless_replaceable(checked, str(settings.warehouse), replaces=None)
            finally:
                checked.close()
            settings.warehouse.unlink()
            settings.warehouse.with_name(settings.warehouse.name + ".wal").unlink(missing_ok=True)
        with connection(settings.warehouse) as con:
            con.execute(sql("reports/demo_marker"))
            counts = generate_demo_warehouse(con, customers=customers, end=end, seed=seed)
            ledger.ensure_ledger(con)
    return counts


def _prepare_postgres(
    settings: Settings, *, customers: int, end: datetime, seed: int
) -> dict[str, int]:
    """Generate into a scratch DuckDB file, then replace what an earlier demo left in the
    database with it, in one transaction: a failure leaves the database as it was."""
    assert settings.postgres is not None
    where = settings.postgres.url
    # The schemas a demo makes (dbt's, with their incremental state, included); a DuckDB demo
    # deletes its file instead.
    replaces = ("raw", "nudge", *dbt_schemas())
    with locked_session(settings.postgres) as con:
        # Checked before the minute of generating, and again inside the transaction.
        _refuse_unless_replaceable(con, where, replaces=replaces)
        with tempfile.TemporaryDirectory(prefix="nudge-demo-") as folder:
            scratch = connect(Path(folder) / "demo.duckdb")
            try:
                counts = generate_demo_warehouse(scratch, customers=customers, end=end, seed=seed)
                con.begin()
                try:
                    _refuse_unless_replaceable(con, where, replaces=replaces)
                    schemas = ", ".join(quote_identifier(s) for s in replaces)
                    con.execute(sql_for(con, "reports/demo_drop_schemas").format(schemas=schemas))
                    # The marker commits with the data: a demo that fails later (the ledger's
                    # migrations below) leaves a database the next demo replaces.
                    con.execute(sql_for(con, "reports/demo_marker"))
                    copy_into_postgres(scratch, con, "raw", Path(folder))
                    con.commit()
                except BaseException:
                    with contextlib.suppress(*DATABASE_ERRORS):  # keep the error that got here
                        con.rollback()
                    raise
            finally:
                scratch.close()
        ledger.ensure_ledger(con)
    return counts


def _refuse_unless_replaceable(
    con: Connection, where: str, *, replaces: tuple[str, ...] | None
) -> None:
    """Refuse a warehouse the demo did not make, unless it holds nothing the demo would drop:
    ``replaces`` names the schemas it drops (None: all of them, as a DuckDB file goes whole)."""
    tables = {
        (schema, name) for schema, name in con.execute(sql_for(con, "reports/relations")).fetchall()
    }
    if ("nudge", DEMO_MARKER) in tables:
        return
    sends = 0
    if ("nudge", "send_ledger") in tables:
        found = one(con, sql_for(con, "reports/ledger_rows"))
        sends = int(found[0]) if found else 0
    # nudge's own schema with an empty ledger (a `nudge init` or a `nudge run` before any data
    # was loaded) may go; anyone's table anywhere the demo drops may not.
    theirs = sorted(
        f"{schema}.{name}"
        for schema, name in tables
        if schema != "nudge" and (replaces is None or schema in replaces)
    )
    if theirs or sends:
        held = f"{sends} sends in nudge.send_ledger" if sends else ", ".join(theirs[:3])
        raise ConfigError(
            f"{where} was not created by `nudge demo` and holds data ({held}); refusing to "
            "overwrite it. Point NUDGE_WAREHOUSE at another file or an empty database."
        )


def format_progress(con: Connection, examples: int = 4) -> str:
    """How the sequences moved: per step what happened, and a few entries' timelines."""
    steps = con.execute(sql_for(con, "reports/demo_progress")).fetchall()
    timelines = con.execute(sql_for(con, "reports/demo_timelines")).fetchall()
    lines = ["Sequence progress (the ledger, per step):"]
    for trigger, step, _, sent, holdout, deferred, not_sent in steps:
        lines.append(
            f"  {trigger + '/' + step:<38} sent {sent:>5}  holdout {holdout:>4}  "
            f"deferred {deferred:>4}  skipped/expired {not_sent:>4}"
        )
    lines.append(f"\n{len(timelines)} entries received two or more steps, for example:")
    for trigger, key, names, sent_as_of in timelines[:examples]:
        # The ticks' instants in UTC, whatever zone the engine's session returned them in.
        sends = (
            f"{name} {at.astimezone(UTC):%a %H:%M}"
            for name, at in zip(names, sent_as_of, strict=True)
        )
        lines.append(f"  {trigger} {key}: " + " -> ".join(sends) + " (UTC)")
    return "\n".join(lines)
