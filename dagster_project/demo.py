"""``nudge demo``: a synthetic warehouse, then the last days replayed through the real job.

The data comes from ``demo_data.py``; each tick is a real ``nudge run`` of the Dagster job
(``tick.py``) at a past instant, so sequences visibly move from step to step in minutes.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from . import ledger
from .config import ConfigError, Settings
from .demo_data import generate_demo_warehouse
from .warehouse import connection, one, sql

# A table only `nudge demo` creates: a warehouse with it may be replaced by the next demo.
DEMO_MARKER = "nudge_demo"


def prepare_demo_warehouse(settings: Settings, *, customers: int, end: datetime, seed: int) -> str:
    """Create a fresh demo warehouse, refusing to overwrite one the demo did not create.

    Returns a line saying what was generated.
    """
    if settings.warehouse.exists():
        _refuse_unless_replaceable(settings)
        settings.warehouse.unlink()
        settings.warehouse.with_name(settings.warehouse.name + ".wal").unlink(missing_ok=True)
    settings.warehouse.parent.mkdir(parents=True, exist_ok=True)
    with connection(settings.warehouse) as con:
        counts = generate_demo_warehouse(con, customers=customers, end=end, seed=seed)
        ledger.ensure_ledger(con)
        con.execute(sql("reports/demo_marker"))
    return (
        f"demo warehouse {settings.warehouse}: {counts['customers']} customers, "
        f"{counts['events']} events, {counts['subscriptions']} consent changes (with bad rows)"
    )


def _refuse_unless_replaceable(settings: Settings) -> None:
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        tables = {
            (schema, name) for schema, name in con.execute(sql("reports/relations")).fetchall()
        }
        sends = 0
        if ("nudge", "send_ledger") in tables:
            found = one(con, sql("reports/ledger_rows"))
            sends = int(found[0]) if found else 0
    finally:
        con.close()
    # Only a demo's own warehouse, or one with no data of anyone's (e.g. left by a `nudge run`
    # before any data was loaded), may be replaced.
    is_demo = ("nudge", DEMO_MARKER) in tables
    is_empty = not any(schema == "raw" for schema, _ in tables) and sends == 0
    if not (is_demo or is_empty):
        raise ConfigError(
            f"{settings.warehouse} exists and was not created by `nudge demo`; refusing to "
            f"overwrite it. Point NUDGE_WAREHOUSE at another file for the demo."
        )


def format_progress(settings: Settings, examples: int = 4) -> str:
    """How the sequences moved: per step what happened, and a few entries' timelines."""
    with connection(settings.warehouse) as con:
        steps = con.execute(sql("reports/demo_progress")).fetchall()
        timelines = con.execute(sql("reports/demo_timelines")).fetchall()
    lines = ["Sequence progress (the ledger, per step):"]
    for trigger, step, _, sent, holdout, deferred, not_sent in steps:
        lines.append(
            f"  {trigger + '/' + step:<38} sent {sent:>5}  holdout {holdout:>4}  "
            f"deferred {deferred:>4}  skipped/expired {not_sent:>4}"
        )
    lines.append(f"\n{len(timelines)} entries received two or more steps, for example:")
    for trigger, key, sends in timelines[:examples]:
        lines.append(f"  {trigger} {key}: " + " -> ".join(sends) + " (UTC)")
    return "\n".join(lines)
