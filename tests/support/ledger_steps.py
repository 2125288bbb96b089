"""Ledger steps as a tick takes them, for tests that set up a ledger by hand.

A tick plans inside ``ledger.planning``, hands requests over through the journal
(``handover.HandoverJournal``) and settles with ``ledger.settle``; these helpers do the same
with one call each, so a test's starting state is one the real code could have left.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb

from dagster_project import ledger
from dagster_project.handover import HandoverJournal
from dagster_project.providers import SendResult


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
) -> None:
    """Journal a request carrying ``send_ids`` as a provider does (and its answers, if given)
    without settling it: the state a run killed mid-push leaves."""
    with HandoverJournal(con, run_id=run_id, trigger=trigger) as journal:
        journal.handing_over(list(send_ids), key)
        if answers:
            journal.answered(list(answers))
        journal.flush()
