"""The send ledger (``nudge.send_ledger``): identity of a send and its state changes.

Every function takes an open DuckDB connection and runs SQL from ``sql/ledger/``. The order of
calls in a tick is what makes sends exactly-once (see ``dispatch.py``):
resume -> plan -> for each batch: claim (planned -> sending, committed) -> ESP -> settle.
Each state change is appended to ``nudge.send_events`` in the same transaction, so the history
and the ledger never disagree, even when the process is killed between the two statements.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from . import failpoints
from .providers import SendResult
from .warehouse import quote_relation, sql

# The columns every state-changing statement returns, recorded in nudge.send_events.
_EVENT_COLUMNS = "send_id, trigger, status, reason, error, attempts, batch_id"


@dataclass(frozen=True)
class RetryPolicy:
    """How later ticks retry ``failed_retryable`` sends.

    The wait before the next attempt doubles with each attempt (``base_minutes``, then twice
    that, ...) up to ``max_backoff_minutes``; a send still failing ``max_age_hours`` after its
    first planning gives up as ``failed_permanent`` (reason ``retry_max_age``). Its grace window
    usually ends first, which makes it ``expired``.
    """

    base_minutes: int = 15
    max_backoff_minutes: int = 360
    max_age_hours: int = 24


@dataclass(frozen=True)
class FrequencyCaps:
    """At most ``day`` marketing emails per customer per 24 h and ``week`` per 7 days.

    Counted across every trigger from what the ledger says went out (by tick time); a capped
    step is deferred to a later tick or skipped, per its trigger's ``cap_policy``.
    Transactional triggers neither obey nor count toward the caps.
    """

    day: int = 1
    week: int = 3


def send_id(trigger: str, trigger_key: str, step: str) -> str:
    """Deterministic id of a send; mirrors the dbt macro ``send_id`` exactly."""
    return hashlib.md5(f"{trigger}|{trigger_key}|{step}".encode()).hexdigest()


def batch_key(send_ids: Sequence[str]) -> str:
    """The idempotency key of a batch: the same send_ids always give the same key."""
    return hashlib.sha256(",".join(sorted(send_ids)).encode()).hexdigest()[:32]


def ensure_ledger(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``nudge`` schema, ledger, events and runs tables if missing, and upgrade an
    older ledger in place (idempotent)."""
    con.execute(sql("ledger/create"))
    with _transaction(con):
        rows = con.execute(
            f"{sql('ledger/upgrade_inactivity')}\nreturning {_EVENT_COLUMNS}"
        ).fetchall()
        _record_events(con, rows, run_id="upgrade", as_of=None)


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.begin()
    try:
        yield
    except BaseException:
        con.rollback()
        raise
    con.commit()


def _record_events(
    con: duckdb.DuckDBPyConnection,
    rows: Sequence[tuple[Any, ...]],
    *,
    run_id: str,
    as_of: datetime | None,
) -> None:
    if not rows:
        return
    # One set-based insert from a frame: executemany would cost a round trip per row.
    frame = pl.DataFrame(
        rows,
        schema={
            "send_id": pl.String,
            "trigger": pl.String,
            "status": pl.String,
            "reason": pl.String,
            "error": pl.String,
            "attempts": pl.Int32,
            "batch_id": pl.String,
        },
        orient="row",
    )
    con.register("changed_rows", frame.to_arrow())
    try:
        con.execute(
            f"""
            insert into nudge.send_events
                ({_EVENT_COLUMNS}, run_id, as_of, recorded_at)
            select *, $run_id, $as_of, now() from changed_rows
            """,
            {"run_id": run_id, "as_of": as_of},
        )
    finally:
        con.unregister("changed_rows")


def _change(
    con: duckdb.DuckDBPyConnection,
    statement: str,
    params: dict[str, Any],
    *,
    run_id: str,
    as_of: datetime | None,
    failpoint: str | None = None,
) -> list[tuple[Any, ...]]:
    """Run one state change and record its events, atomically; return the changed rows."""
    with _transaction(con):
        rows = con.execute(statement, params).fetchall()
        if failpoint:
            failpoints.hit(failpoint)
        _record_events(con, rows, run_id=run_id, as_of=as_of)
    return rows


def resume(
    con: duckdb.DuckDBPyConnection,
    *,
    trigger: str,
    eligibility: str,
    run_id: str,
    as_of: datetime,
    provider: str,
    idempotent: bool,
    retry: RetryPolicy | None = None,
) -> dict[str, int]:
    """Take over unfinished sends of earlier runs, re-checked against the current eligibility.

    The caller holds the warehouse lock, so no other run is live. Returns how many rows moved
    to each status ('planned' ones are sent by this run).
    """
    retry = retry or RetryPolicy()
    statement = sql("ledger/resume").format(eligibility=quote_relation(eligibility))
    rows = _change(
        con,
        f"{statement}\nreturning {_EVENT_COLUMNS}",
        {
            "trigger": trigger,
            "run_id": run_id,
            "as_of": as_of,
            "provider": provider,
            "idempotent": idempotent,
            "retry_max_age_hours": retry.max_age_hours,
        },
        run_id=run_id,
        as_of=as_of,
    )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[2]] = counts.get(row[2], 0) + 1
    return counts


@contextmanager
def planning(
    con: duckdb.DuckDBPyConnection,
    *,
    eligibility: str,
    run_id: str,
    as_of: datetime,
    provider: str,
    cap_policy: str = "defer",
    caps: FrequencyCaps | None = None,
    competitors: Sequence[str] = (),
) -> Iterator[PlanDecision]:
    """Plan this tick's due steps, letting the caller look at them before they are committed.

    Every due step is decided (``plan_decide.sql``): planned, deferred or skipped by the
    frequency cap, held out, or skipped by its condition; new ones are inserted and deferred
    ones released. Inside the block nothing is committed; ``decision.hold()`` rolls it all back
    (the mass-send guard), so a held tick leaves no trace in the ledger and the next tick decides
    afresh. ``competitors``: eligibility relations of higher-priority marketing triggers, whose
    due sends take a customer's cap slot before this trigger's.
    """
    caps = caps or FrequencyCaps()
    params = {"run_id": run_id, "as_of": as_of, "provider": provider}
    decide = sql("ledger/plan_decide").format(
        eligibility=quote_relation(eligibility), competitors=competing_sends(competitors)
    )
    decision = PlanDecision()
    con.begin()
    try:
        con.execute(
            decide,
            {
                "as_of": as_of,
                "cap_day": caps.day,
                "cap_week": caps.week,
                "cap_policy": cap_policy,
            },
        )
        rows = con.execute(
            f"{sql('ledger/plan_deferred')}\nreturning {_EVENT_COLUMNS}",
            {"run_id": run_id, "as_of": as_of, "provider": provider},
        ).fetchall()
        rows += con.execute(f"{sql('ledger/plan')}\nreturning {_EVENT_COLUMNS}", params).fetchall()
        for row in rows:
            decision.by_status[row[2]] = decision.by_status.get(row[2], 0) + 1
        decision.count = decision.by_status.get("planned", 0)
        decision.deferred = con.execute(
            "select count(*) from plan_decisions where decided_status = 'deferred'"
        ).fetchall()[0][0]
        yield decision
        if decision.held:
            con.rollback()
            return
        _record_events(con, rows, run_id=run_id, as_of=as_of)
    except BaseException:
        con.rollback()
        raise
    con.commit()


def competing_sends(relations: Sequence[str]) -> str:
    """One row per due, not yet sent marketing send of the given eligibility relations."""
    if not relations:
        return "select cast(null as varchar) as customer_id where false"
    return "\nunion all\n".join(
        f"""
        select customer_id from {quote_relation(relation)}
        where
            is_eligible
            and category = 'marketing'
            and due_at <= $as_of
            and $as_of <= expires_at
            and send_id not in (
                select send_id from nudge.send_ledger where status != 'deferred'
            )
        """
        for relation in relations
    )


@dataclass
class PlanDecision:
    """How many sends a tick would plan, and whether the caller held them back."""

    count: int = 0  # planned: handed to the provider this tick
    deferred: int = 0  # capped and waiting for a later tick (new and still deferred)
    by_status: dict[str, int] = field(default_factory=dict)  # rows written, by status
    held: bool = False

    def hold(self) -> None:
        self.held = True


def plan(
    con: duckdb.DuckDBPyConnection,
    *,
    eligibility: str,
    run_id: str,
    as_of: datetime,
    provider: str,
    **options: Any,
) -> int:
    """Plan this tick's due steps (see :func:`planning`); return how many will be sent."""
    with planning(
        con, eligibility=eligibility, run_id=run_id, as_of=as_of, provider=provider, **options
    ) as decision:
        pass
    return decision.count


def planned_batches(
    con: duckdb.DuckDBPyConnection, *, trigger: str, run_id: str, batch_size: int
) -> list[list[tuple[str, str, str, str | None]]]:
    """This run's planned rows as batches of ``(send_id, customer_id, context json, batch_id)``.

    Rows resumed from an interrupted idempotent batch come first, grouped exactly as they were
    (same send_ids, same key); new rows follow in batches of ``batch_size``.
    """
    rows = con.execute(
        """
        select send_id, customer_id, cast(context as varchar), batch_id
        from nudge.send_ledger
        where trigger = $trigger and run_id = $run_id and status = 'planned'
        order by batch_id nulls last, due_at, send_id
        """,
        {"trigger": trigger, "run_id": run_id},
    ).fetchall()
    batches: list[list[tuple[str, str, str, str | None]]] = []
    fresh: list[tuple[str, str, str, str | None]] = []
    for row in rows:
        if row[3] is None:
            fresh.append(row)
        elif batches and batches[-1][0][3] == row[3]:
            batches[-1].append(row)
        else:
            batches.append([row])
    batches.extend(fresh[i : i + batch_size] for i in range(0, len(fresh), batch_size))
    return batches


def claim_batch(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    send_ids: Sequence[str],
    batch_id: str,
    as_of: datetime | None = None,
) -> set[str]:
    """Mark a batch ``sending`` before the ESP call; return the send_ids actually claimed."""
    rows = _change(
        con,
        sql("ledger/claim_batch"),
        {"run_id": run_id, "send_ids": list(send_ids), "batch_id": batch_id, "as_of": as_of},
        run_id=run_id,
        as_of=as_of,
    )
    return {r[0] for r in rows}


def settle(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    results: Sequence[SendResult],
    as_of: datetime,
    retry: RetryPolicy | None = None,
) -> None:
    """Record each result: ``sent`` with the provider's message id, else the status and why."""
    if not results:
        return
    retry = retry or RetryPolicy()
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
        _change(
            con,
            sql("ledger/settle"),
            {
                "run_id": run_id,
                "as_of": as_of,
                "retry_base_minutes": retry.base_minutes,
                "retry_max_backoff_minutes": retry.max_backoff_minutes,
            },
            run_id=run_id,
            as_of=as_of,
            # Killed here, the settle is rolled back whole: the rows stay 'sending'.
            failpoint="mid_settle",
        )
    finally:
        con.unregister("results")


def skip(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    send_ids: Sequence[str],
    reason: str,
    error: str,
    as_of: datetime | None = None,
) -> int:
    """Settle planned rows as ``skipped`` with a reason, before they reach the provider."""
    if not send_ids:
        return 0
    rows = _change(
        con,
        f"""
        update nudge.send_ledger
        set status = 'skipped', reason = $reason, error = $error, settled_at = now(),
            updated_at = now()
        where run_id = $run_id and status = 'planned' and send_id in (select unnest($send_ids))
        returning {_EVENT_COLUMNS}
        """,
        {"run_id": run_id, "send_ids": list(send_ids), "reason": reason, "error": error},
        run_id=run_id,
        as_of=as_of,
    )
    return len(rows)


def unsubscribed_now(
    con: duckdb.DuckDBPyConnection,
    *,
    subscriptions: str,
    customer_ids: Sequence[str],
    consent_list: str,
    cutoff: datetime,
    status: str = "unsubscribed",
) -> set[str]:
    """Which of these customers' latest change on ``consent_list`` up to ``cutoff`` is
    ``status`` (an unsubscribe; or ``suppressed`` on the suppression list)."""
    if not customer_ids:
        return set()
    statement = sql("ledger/unsubscribed_before_send").format(
        subscriptions=quote_relation(subscriptions)
    )
    rows = con.execute(
        statement,
        {
            "customer_ids": list(set(customer_ids)),
            "list": consent_list,
            "status": status,
            "cutoff": cutoff,
        },
    ).fetchall()
    return {r[0] for r in rows}


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


def duplicate_deliveries(con: duckdb.DuckDBPyConnection, *, trigger: str) -> int:
    """send_ids the history shows as settled ``sent`` more than once: must always be 0."""
    row = con.execute(
        """
        select count(*) from (
            select send_id from nudge.send_events
            where trigger = $trigger and status = 'sent'
            group by send_id
            having count(*) > 1
        )
        """,
        {"trigger": trigger},
    ).fetchone()
    return int(row[0]) if row else 0


def recent_new_counts(
    con: duckdb.DuckDBPyConnection, *, trigger: str, before: datetime, ticks: int
) -> list[int]:
    """New sends planned by the trigger's last ``ticks`` completed ticks before ``before``."""
    rows = con.execute(
        """
        select new from nudge.runs
        where trigger = $trigger and as_of < $before and outcome in ('ok', 'failed')
            and new is not null
        order by as_of desc
        limit $ticks
        """,
        {"trigger": trigger, "before": before, "ticks": ticks},
    ).fetchall()
    return [int(r[0]) for r in rows]


def record_run(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Write this run's row for one trigger into ``nudge.runs`` (replacing a retried step's)."""
    params = dict(row)
    params["errors"] = json.dumps(params.get("errors") or [])
    con.execute(sql("ledger/record_run"), params)


def unknown_sends(
    con: duckdb.DuckDBPyConnection, *, trigger: str | None = None
) -> list[tuple[Any, ...]]:
    """Every ``unknown`` send as (send_id, trigger, step, customer_id, provider, sending_at,
    error)."""
    return con.execute(
        """
        select send_id, trigger, step, customer_id, provider, sending_at, error
        from nudge.send_ledger
        where status = 'unknown' and ($trigger is null or trigger = $trigger)
        order by trigger, sending_at, send_id
        """,
        {"trigger": trigger},
    ).fetchall()


def resolve_unknown(
    con: duckdb.DuckDBPyConnection,
    *,
    action: str,
    run_id: str,
    trigger: str | None = None,
    send_ids: Sequence[str] | None = None,
) -> int:
    """An operator's decision on ``unknown`` sends, after checking the provider's logs.

    ``resend``: they were not delivered; they become ``failed_retryable`` with no wait, and the
    next tick sends them if their grace window is still open. ``drop``: do not send them; they
    become ``skipped`` (reason ``unknown_dropped``).
    """
    if action not in ("resend", "drop"):
        raise ValueError(f"action must be resend or drop, got {action!r}")
    status, reason, error = (
        ("failed_retryable", "unknown_resend_requested", "operator asked to resend")
        if action == "resend"
        else ("skipped", "unknown_dropped", "operator dropped an unknown send")
    )
    rows = _change(
        con,
        f"""
        update nudge.send_ledger
        set status = $status, reason = $reason, error = $error, next_attempt_at = null,
            batch_id = null, settled_at = now(), updated_at = now()
        where status = 'unknown'
            and ($trigger is null or trigger = $trigger)
            and ($all_ids or send_id in (select unnest($send_ids)))
        returning {_EVENT_COLUMNS}
        """,
        {
            "status": status,
            "reason": reason,
            "error": error,
            "trigger": trigger,
            "all_ids": send_ids is None,
            "send_ids": list(send_ids or []),
        },
        run_id=run_id,
        as_of=None,
    )
    return len(rows)
