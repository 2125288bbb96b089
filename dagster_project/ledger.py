"""The send ledger (``nudge.send_ledger``): identity of a send and its state changes.

Every function takes an open DuckDB connection and runs one statement from ``sql/ledger/``.
The order of calls in a tick is what makes sends exactly-once (see ``dispatch.py``):
resume -> plan -> for each batch: claim (planned -> sending, committed) -> ESP -> settle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import duckdb
import polars as pl

from .providers import SendResult
from .warehouse import quote_relation, sql


def send_id(trigger: str, trigger_key: str, step: str) -> str:
    """Deterministic id of a send; mirrors the dbt macro ``send_id`` exactly."""
    return hashlib.md5(f"{trigger}|{trigger_key}|{step}".encode()).hexdigest()


def ensure_ledger(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``nudge`` schema and ledger if they do not exist (idempotent)."""
    con.execute(sql("ledger/create"))


def resume(
    con: duckdb.DuckDBPyConnection,
    *,
    trigger: str,
    eligibility: str,
    run_id: str,
    as_of: datetime,
    idempotent_providers: Sequence[str],
) -> dict[str, int]:
    """Take over unfinished sends of earlier runs, re-checked against the current eligibility.

    The caller holds the warehouse lock, so no other run is live. Returns how many rows moved
    to each status ('planned' ones are sent by this run).
    """
    statement = sql("ledger/resume").format(eligibility=quote_relation(eligibility))
    rows = con.execute(
        statement + "\nreturning status",
        {
            "trigger": trigger,
            "run_id": run_id,
            "as_of": as_of,
            "idempotent_providers": list(idempotent_providers),
        },
    ).fetchall()
    counts: dict[str, int] = {}
    for (status,) in rows:
        counts[status] = counts.get(status, 0) + 1
    return counts


def plan(
    con: duckdb.DuckDBPyConnection, *, eligibility: str, run_id: str, as_of: datetime, provider: str
) -> int:
    """Insert this tick's new sends as ``planned``; return how many were claimed."""
    statement = sql("ledger/plan").format(eligibility=quote_relation(eligibility))
    claimed = con.execute(
        statement + "\nreturning send_id",
        {"run_id": run_id, "as_of": as_of, "provider": provider},
    ).fetchall()
    return len(claimed)


def planned_batches(
    con: duckdb.DuckDBPyConnection, *, trigger: str, run_id: str, batch_size: int
) -> list[list[tuple[str, str]]]:
    """The ``(send_id, context json)`` of this run's planned rows, in batches of ``batch_size``."""
    rows = con.execute(
        """
        select send_id, cast(context as varchar)
        from nudge.send_ledger
        where trigger = $trigger and run_id = $run_id and status = 'planned'
        order by due_at, send_id
        """,
        {"trigger": trigger, "run_id": run_id},
    ).fetchall()
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def claim_batch(
    con: duckdb.DuckDBPyConnection, *, run_id: str, send_ids: Sequence[str]
) -> set[str]:
    """Mark a batch ``sending`` before the ESP call; return the send_ids actually claimed."""
    rows = con.execute(
        sql("ledger/claim_batch"), {"run_id": run_id, "send_ids": list(send_ids)}
    ).fetchall()
    return {r[0] for r in rows}


def settle(con: duckdb.DuckDBPyConnection, *, run_id: str, results: Sequence[SendResult]) -> None:
    """Record each result: ``sent`` with the provider's message id, else the status and why."""
    if not results:
        return
    frame = pl.DataFrame(
        {
            "send_id": [r.send_id for r in results],
            "status": [r.status for r in results],
            "provider_message_id": [r.provider_message_id for r in results],
            "error": [r.error for r in results],
            "attempts": [r.attempts for r in results],
            "retryable": [r.retryable for r in results],
        },
        schema={
            "send_id": pl.String,
            "status": pl.String,
            "provider_message_id": pl.String,
            "error": pl.String,
            "attempts": pl.Int32,
            "retryable": pl.Boolean,
        },
    )
    con.register("results", frame.to_arrow())
    try:
        con.execute(sql("ledger/settle"), {"run_id": run_id})
    finally:
        con.unregister("results")


def status_counts(con: duckdb.DuckDBPyConnection, *, trigger: str, run_id: str) -> dict[str, int]:
    """How this run's rows of one trigger ended, by status."""
    rows = con.execute(
        """
        select status, count(*) from nudge.send_ledger
        where trigger = $trigger and run_id = $run_id
        group by status
        """,
        {"trigger": trigger, "run_id": run_id},
    ).fetchall()
    return {status: count for status, count in rows}
