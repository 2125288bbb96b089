"""The audit trail, ``nudge.audit_log``: who changed consent, erased, approved, paused or
resolved what, and when. Append-only: nothing in nudge updates or deletes a row, except
``nudge erase``, which pseudonymises the erased person's subject like everywhere else.

``actor`` says who: ``service`` (nudge serve), ``cli:<user>`` (a person at a terminal),
``schedule`` or ``run:<run id>`` (a Dagster run).
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from .warehouse import Connection, sql_for


def cli_actor() -> str:
    """The person running a command (``cli:<login>``)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "cli:unknown"


def record(
    con: Connection,
    action: str,
    *,
    actor: str,
    subject: str | None = None,
    detail: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
    audit_id: str | None = None,
) -> str:
    """Append one row; returns its id."""
    audit_id = audit_id or uuid.uuid4().hex
    record_many(
        con,
        [(audit_id, occurred_at or datetime.now(UTC), action, actor, subject, detail)],
    )
    return audit_id


AuditRow = tuple[str, datetime, str, str, str | None, Mapping[str, Any] | None]


def record_many(con: Connection, rows: Sequence[AuditRow]) -> None:
    """Append rows ``(audit_id, occurred_at, action, actor, subject, detail)``; an id already
    there is not added again (a drain repeated after a crash)."""
    if not rows:
        return
    frame = pl.DataFrame(
        {
            "audit_id": [r[0] for r in rows],
            "occurred_at": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "actor": [r[3] for r in rows],
            "subject": [r[4] for r in rows],
            "detail": [
                json.dumps(dict(r[5]), sort_keys=True, default=str) if r[5] else None for r in rows
            ],
        },
        schema_overrides={
            "occurred_at": pl.Datetime("us", "UTC"),
            "subject": pl.Utf8,
            "detail": pl.Utf8,
        },
    )
    con.register("audit_rows", frame)
    try:
        con.execute(sql_for(con, "audit/append").format(rows="audit_rows")).fetchall()
    finally:
        con.unregister("audit_rows")
