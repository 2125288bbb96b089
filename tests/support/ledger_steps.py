"""Ledger steps as a tick takes them, for tests that set up a ledger by hand.

A tick plans inside ``ledger.planning``, hands requests over through the journal
(``handover.HandoverJournal``), settles with ``ledger.settle``, and the next tick resumes what a
dead push left (``ledger.resume`` with the journal's files); these helpers do the same with one
call each, so a test's starting state is one the real code could have left.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from dagster_project import handover, ledger
from dagster_project.handover import HandoverJournal
from dagster_project.providers import SendResult
from dagster_project.warehouse import journal_dir


def plan(
    con: duckdb.DuckDBPyConnection,
    *,
    eligibility: str,
    run_id: str,
    as_of: datetime,
    provider: str,
    **options: Any,
) -> int:
    """Plan a tick's due steps (``ledger.planning``, committed); return how many are planned."""
    with ledger.planning(
        con, eligibility=eligibility, run_id=run_id, as_of=as_of, provider=provider, **options
    ) as decision:
        pass
    return decision.planned


def hand_over(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    trigger: str,
    send_ids: Sequence[str],
    key: str | None = None,
    answers: Sequence[SendResult] = (),
    as_of: datetime | None = None,
) -> None:
    """Journal a request carrying ``send_ids`` as a provider does (and its answers, if given)
    without settling it: what a push killed mid-request leaves behind. ``as_of``: the push's
    tick, as dispatch journals it."""
    journal = HandoverJournal(journal_dir(con), run_id=run_id, trigger=trigger, as_of=as_of)
    try:
        journal.handing_over(list(send_ids), key)
        if answers:
            journal.answered(list(answers))
        journal.flush()
    finally:
        journal.close(discard=False)  # the push "died": its file stays


def journal(con: duckdb.DuckDBPyConnection, trigger: str = "abandoned_cart") -> pl.DataFrame:
    """What dead pushes of ``trigger`` left in the journal."""
    return handover.read(journal_dir(con), trigger)[0]


def age_journal(con: duckdb.DuckDBPyConnection, hours: float) -> None:
    """Move every journal entry ``hours`` into the past (the wall clock a test cannot wait on)."""
    for path in journal_dir(con).glob(f"*{handover.SUFFIX}"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        for row in rows:
            row["recorded_at"] = (
                datetime.fromisoformat(row["recorded_at"]) - timedelta(hours=hours)
            ).isoformat()
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def resume(con: duckdb.DuckDBPyConnection, **options: Any) -> dict[str, int]:
    """``ledger.resume`` as dispatch runs it: with the journal's files, deleted afterwards."""
    left, files = handover.read(journal_dir(con), options["trigger"])
    counts = ledger.resume(con, journal=left, **options)
    handover.discard(files)
    return counts
