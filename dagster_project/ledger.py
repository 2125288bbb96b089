"""The send ledger (``nudge.send_ledger``): the identity of a send and its state changes.

"Ledger" is this module plus ``sql/ledger/``: every function takes an open DuckDB connection and
runs a statement from there. The order of calls in a tick is what makes sends exactly-once (see
``dispatch.py``): resume -> plan -> for each batch: hand over request by request (the journal,
``handover.py``, beside the warehouse) -> settle. Each state change is appended to
``nudge.send_events`` in the same transaction, so the history and the ledger never disagree,
even when the process is killed between two statements.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from . import failpoints
from .config import SQL_DIR
from .handover import SCHEMA as JOURNAL_SCHEMA
from .policy import FrequencyCaps, RetryPolicy
from .providers import SendResult
from .warehouse import Connection, one, quote_relation, sql_for

MIGRATIONS_DIR = SQL_DIR / "ledger" / "migrations"

# What every state-changing statement returns, recorded in nudge.send_events.
_EVENT_COLUMNS = "send_id, trigger, status, reason, error, attempts, batch_id"

# An empty hand-over journal, for a resume with nothing left by a dead push.
_NO_JOURNAL = pl.DataFrame(schema=JOURNAL_SCHEMA)

# A batch of planned sends as dispatch pushes it.
PlannedRow = tuple[str, str, str, str | None]  # (send_id, customer_id, context json, batch_id)


def batch_key(send_ids: Sequence[str]) -> str:
    """The idempotency key of a batch: the same send_ids always give the same key."""
    return hashlib.sha256(",".join(sorted(send_ids)).encode()).hexdigest()[:32]


# -- schema -----------------------------------------------------------------------------------


def ensure_ledger(con: Connection) -> list[str]:
    """Create or upgrade the ``nudge`` schema: apply the migrations this warehouse lacks.

    ``sql/ledger/migrations/NNN_*.sql`` run in order, each once, recorded in
    ``nudge.migrations``; on an up-to-date warehouse this is one query. Every migration is
    idempotent, so a warehouse from before the table existed upgrades in place. Returns the
    versions applied now. The caller holds the warehouse lock.
    """
    con.execute(sql_for(con, "ledger/migrations_table"))
    applied = {row[0] for row in con.execute(sql_for(con, "ledger/migrations_applied")).fetchall()}
    done = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.stem in applied:
            continue
        with _transaction(con):
            con.execute(path.read_text())
            con.execute(sql_for(con, "ledger/migration_applied"), {"version": path.stem})
        done.append(path.stem)
    return done


# -- state changes ----------------------------------------------------------------------------


@contextmanager
def _transaction(con: Connection) -> Iterator[None]:
    con.begin()
    try:
        yield
    except BaseException:
        con.rollback()
        raise
    con.commit()


def _record_events(
    con: Connection,
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
        con.execute(sql_for(con, "ledger/record_events"), {"run_id": run_id, "as_of": as_of})
    finally:
        con.unregister("changed_rows")


def _change(
    con: Connection,
    statements: Sequence[str],
    params: dict[str, Any],
    *,
    run_id: str,
    as_of: datetime | None,
    failpoint: str | None = None,
) -> list[tuple[Any, ...]]:
    """Run state changes and record their events, atomically; return the changed rows.

    Each of ``statements`` returns the event columns of the rows it changed.
    """
    rows: list[tuple[Any, ...]] = []
    with _transaction(con):
        for statement in statements:
            rows += con.execute(statement, params).fetchall()
        if failpoint:
            failpoints.hit(failpoint)
        _record_events(con, rows, run_id=run_id, as_of=as_of)
    return rows


def _drop_temp(con: Connection, table: str) -> None:
    con.execute(sql_for(con, "ledger/drop_temp").format(table=table))


def _returning(con: Connection, name: str, *, alias: str | None = "ledger") -> str:
    """The statement with the event columns of the rows it changed. ``alias``: the ledger's
    alias in an update, which PostgreSQL needs to tell them from a joined relation's."""
    prefix = f"{alias}." if alias else ""
    columns = ", ".join(prefix + c for c in _EVENT_COLUMNS.split(", "))
    return f"{sql_for(con, name)}\nreturning {columns}"


def _counts(rows: Sequence[tuple[Any, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[2]] = counts.get(row[2], 0) + 1
    return counts


def resume(
    con: Connection,
    *,
    trigger: str,
    eligibility: str,
    run_id: str,
    as_of: datetime,
    provider: str,
    idempotent: bool,
    retry: RetryPolicy | None = None,
    journal: pl.DataFrame | None = None,
) -> dict[str, int]:
    """Take over unfinished sends of earlier runs, re-checked against the current eligibility.

    Call it before this run plans anything: rows of ``run_id`` itself are then an earlier
    attempt's (a retried step keeps its run id) and are taken over like a dead run's.

    ``journal``: what pushes of this trigger that died left in the hand-over journal
    (``handover.read``). First, a send whose answer is there is settled from it, whatever the
    ledger says; then ``resume.sql`` decides the rest (a send handed over without an answer is
    in doubt, one never handed over is planned again, ...). The caller holds the warehouse
    lock, so no other run is live, and deletes the journal's files once this returned. Returns
    how many rows moved to each status ('planned' ones are sent by this run).
    """
    retry = retry or RetryPolicy()
    con.register("handovers", (journal if journal is not None else _NO_JOURNAL).to_arrow())
    try:
        counts = _counts(
            _recover_answers(con, trigger=trigger, run_id=run_id, as_of=as_of, retry=retry)
        )
        rows = _change(
            con,
            [_returning(con, "ledger/resume").format(eligibility=quote_relation(eligibility))],
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
    finally:
        con.unregister("handovers")
    for status, count in _counts(rows).items():
        counts[status] = counts.get(status, 0) + count
    return counts


def settle_answers(
    con: Connection,
    *,
    trigger: str,
    run_id: str,
    as_of: datetime,
    journal: pl.DataFrame,
    retry: RetryPolicy | None = None,
) -> dict[str, int]:
    """Settle the sends of dead pushes whose provider answer reached ``journal``, and nothing
    else: what the provider answered is a fact, whatever this run decides next. Dispatch calls
    it before its holds, so a hold (hours, maybe) never leaves delivered sends ``planned``,
    where the deliverability guard would count their bounces but not them and the frequency
    caps would miss them. :func:`resume` settles them too, first; a second call finds none.
    The caller holds the warehouse lock. Returns how many rows moved to each status."""
    con.register("handovers", journal.to_arrow())
    try:
        return _counts(
            _recover_answers(
                con, trigger=trigger, run_id=run_id, as_of=as_of, retry=retry or RetryPolicy()
            )
        )
    finally:
        con.unregister("handovers")


def _recover_answers(
    con: Connection,
    *,
    trigger: str,
    run_id: str,
    as_of: datetime,
    retry: RetryPolicy,
) -> list[tuple[Any, ...]]:
    """Settle the sends of dead runs whose provider answer reached the journal."""
    _drop_temp(con, "results")
    con.execute(sql_for(con, "ledger/recovered_answers"), {"trigger": trigger})
    try:
        found = one(con, sql_for(con, "ledger/results_count"))
        if not found or not found[0]:
            return []
        return _settle_results(con, run_id=run_id, as_of=as_of, retry=retry)
    finally:
        con.execute(sql_for(con, "ledger/results_drop"))


def is_idle(con: Connection, *, trigger: str, eligibility: str, as_of: datetime) -> bool:
    """True when neither :func:`resume` nor :func:`planning` could change a row of ``trigger``
    at ``as_of`` (``idle.sql``): no unfinished send in the ledger and no candidate in the
    eligibility relation. Most send steps of most hourly ticks are idle; skipping their
    transactions is most of what an idle step costs. A journal left by a dead push is the
    caller's to check (``handover.read``)."""
    found = one(
        con,
        sql_for(con, "ledger/idle").format(eligibility=quote_relation(eligibility)),
        {"trigger": trigger, "as_of": as_of},
    )
    return bool(found and found[0])


# -- planning ---------------------------------------------------------------------------------


@dataclass
class PlanDecision:
    """What a tick decided for one trigger's due steps, and whether the caller held it back."""

    planned: int = 0  # handed to the provider this tick
    deferred: int = 0  # capped and waiting for a later tick (new and still deferred)
    by_status: dict[str, int] = field(default_factory=dict)  # rows written, by status
    held: bool = False

    def hold(self) -> None:
        self.held = True


@contextmanager
def planning(
    con: Connection,
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
    frequency cap, held out, skipped by its condition, or superseded by a later step; new ones
    are inserted and deferred ones released. Inside the block nothing is committed;
    ``decision.hold()`` rolls it all back (the mass-send guard), so a held tick leaves no trace
    in the ledger and the next tick decides afresh. ``competitors``: eligibility relations of
    higher-priority marketing triggers, whose due sends take a customer's cap slot before this
    trigger's.
    """
    caps = caps or FrequencyCaps()
    params = {"run_id": run_id, "as_of": as_of, "provider": provider}
    decision = PlanDecision()
    con.begin()
    try:
        _drop_temp(con, "competing_sends")
        con.execute(sql_for(con, "ledger/competing_sends_create"))
        for relation in competitors:
            con.execute(
                sql_for(con, "ledger/competing_sends").format(eligibility=quote_relation(relation)),
                {"as_of": as_of},
            )
        _drop_temp(con, "plan_decisions")
        con.execute(
            sql_for(con, "ledger/plan_decide").format(eligibility=quote_relation(eligibility)),
            {
                "as_of": as_of,
                "cap_day": caps.day,
                "cap_week": caps.week,
                "cap_policy": cap_policy,
            },
        )
        rows = con.execute(_returning(con, "ledger/plan_deferred"), params).fetchall()
        rows += con.execute(_returning(con, "ledger/plan", alias=None), params).fetchall()
        decision.by_status = _counts(rows)
        decision.planned = decision.by_status.get("planned", 0)
        found = one(con, sql_for(con, "ledger/plan_deferred_count"))
        decision.deferred = int(found[0]) if found else 0
        yield decision
        if decision.held:
            con.rollback()
            return
        _record_events(con, rows, run_id=run_id, as_of=as_of)
    except BaseException:
        con.rollback()
        raise
    con.commit()


def planned_batches(
    con: Connection, *, trigger: str, run_id: str, batch_size: int
) -> list[list[PlannedRow]]:
    """This run's planned rows as batches of ``(send_id, customer_id, context json, batch_id)``.

    Rows resumed for a same-key resend come first, grouped exactly as they were handed over
    (same send_ids, same key); new rows follow in batches of ``batch_size``.
    """
    rows = con.execute(
        sql_for(con, "ledger/planned_batches"), {"trigger": trigger, "run_id": run_id}
    ).fetchall()
    batches: list[list[PlannedRow]] = []
    fresh: list[PlannedRow] = []
    for row in rows:
        if row[3] is None:
            fresh.append(row)
        elif batches and batches[-1][0][3] == row[3]:
            batches[-1].append(row)
        else:
            batches.append([row])
    batches.extend(fresh[i : i + batch_size] for i in range(0, len(fresh), batch_size))
    return batches


# -- settling ---------------------------------------------------------------------------------


def settle(
    con: Connection,
    *,
    run_id: str,
    results: Sequence[SendResult],
    as_of: datetime,
    retry: RetryPolicy | None = None,
    batch_id: str | None = None,
    handed_over_at: datetime | None = None,
) -> None:
    """Record each result of a batch: ``sent`` with the provider's message id, else the status
    and why. ``handed_over_at``: when the batch went to the provider (``sending_at``)."""
    settle_batches(
        con,
        run_id=run_id,
        batches=[(results, batch_id, handed_over_at)],
        as_of=as_of,
        retry=retry,
    )


def settle_batches(
    con: Connection,
    *,
    run_id: str,
    batches: Sequence[tuple[Sequence[SendResult], str | None, datetime | None]],
    as_of: datetime,
    retry: RetryPolicy | None = None,
) -> None:
    """:func:`settle` several batches, each ``(results, batch_id, handed_over_at)``, in one
    transaction: a settle costs about as much for a hundred rows as for five hundred."""
    rows = [
        (result, batch_id, handed_over_at if result.attempts else None)
        for results, batch_id, handed_over_at in batches
        for result in results
    ]
    if not rows:
        return
    frame = pl.DataFrame(
        {
            "run_id": [run_id] * len(rows),
            "send_id": [r.send_id for r, _, _ in rows],
            "status": [r.status for r, _, _ in rows],
            "reason": [r.reason for r, _, _ in rows],
            "provider_message_id": [r.provider_message_id for r, _, _ in rows],
            "error": [r.error for r, _, _ in rows],
            "attempts": [r.attempts for r, _, _ in rows],
            "retryable": [r.retryable for r, _, _ in rows],
            "batch_id": [batch_id for _, batch_id, _ in rows],
            "sent_as_of": [as_of] * len(rows),
            "handed_over_at": [handed_over_at for _, _, handed_over_at in rows],
        },
        schema={
            "run_id": pl.String,
            "send_id": pl.String,
            "status": pl.String,
            "reason": pl.String,
            "provider_message_id": pl.String,
            "error": pl.String,
            "attempts": pl.Int32,
            "retryable": pl.Boolean,
            "batch_id": pl.String,
            "sent_as_of": pl.Datetime("us", "UTC"),
            "handed_over_at": pl.Datetime("us", "UTC"),
        },
    )
    con.register("results", frame.to_arrow())
    try:
        _settle_results(con, run_id=run_id, as_of=as_of, retry=retry or RetryPolicy())
    finally:
        con.unregister("results")


def _settle_results(
    con: Connection, *, run_id: str, as_of: datetime, retry: RetryPolicy
) -> list[tuple[Any, ...]]:
    """Apply the relation ``results`` to the ledger, atomically."""
    return _change(
        con,
        [sql_for(con, "ledger/settle")],
        {
            "as_of": as_of,
            "retry_base_minutes": retry.base_minutes,
            "retry_max_backoff_minutes": retry.max_backoff_minutes,
        },
        run_id=run_id,
        as_of=as_of,
        # Killed here, the settle is rolled back whole: the journal still has the answers.
        failpoint="mid_settle",
    )


def skip(
    con: Connection,
    *,
    run_id: str,
    send_ids: Sequence[str],
    reason: str,
    error: str,
    as_of: datetime | None = None,
) -> int:
    """Settle planned rows as ``skipped`` with a reason, before they reach the provider."""
    return _settle_unsent(con, "skipped", run_id, send_ids, reason, error, as_of)


def mark_unknown(
    con: Connection,
    *,
    run_id: str,
    send_ids: Sequence[str],
    reason: str,
    error: str,
    as_of: datetime | None = None,
) -> int:
    """Settle planned rows as ``unknown``: they may have been delivered by an earlier request
    that cannot be sent again as it was (``nudge resolve-unknown`` decides)."""
    return _settle_unsent(con, "unknown", run_id, send_ids, reason, error, as_of)


def _settle_unsent(
    con: Connection,
    status: str,
    run_id: str,
    send_ids: Sequence[str],
    reason: str,
    error: str,
    as_of: datetime | None,
) -> int:
    if not send_ids:
        return 0
    rows = _change(
        con,
        [_returning(con, "ledger/settle_unsent")],
        {
            "run_id": run_id,
            "send_ids": list(send_ids),
            "status": status,
            "reason": reason,
            "error": error,
        },
        run_id=run_id,
        as_of=as_of,
    )
    return len(rows)


# -- reading ----------------------------------------------------------------------------------


def status_counts(con: Connection, *, trigger: str, run_id: str) -> dict[str, int]:
    """How this run's rows of one trigger ended, by status."""
    rows = con.execute(
        sql_for(con, "ledger/status_counts"), {"trigger": trigger, "run_id": run_id}
    ).fetchall()
    return {status: count for status, count in rows}


def duplicate_deliveries(con: Connection, *, trigger: str) -> int:
    """send_ids the history shows as settled ``sent`` more than once: must always be 0."""
    row = one(con, sql_for(con, "ledger/duplicate_deliveries"), {"trigger": trigger})
    return int(row[0]) if row else 0


def recent_new_counts(con: Connection, *, trigger: str, before: datetime, ticks: int) -> list[int]:
    """New sends planned by the trigger's last ``ticks`` completed ticks before ``before``."""
    params = {"trigger": trigger, "before": before, "ticks": ticks}
    rows = con.execute(sql_for(con, "ledger/recent_new_counts"), params).fetchall()
    return [int(r[0]) for r in rows]


def unknown_sends(con: Connection, *, trigger: str | None = None) -> list[tuple[Any, ...]]:
    """Every ``unknown`` send as (send_id, trigger, step, customer_id, provider, sending_at,
    error)."""
    return con.execute(sql_for(con, "ledger/unknown_sends"), {"trigger": trigger}).fetchall()


def resolve_unknown(
    con: Connection,
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
        [_returning(con, "ledger/resolve_unknown")],
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


def journal_lost(con: Connection, *, trigger: str, run_id: str) -> int:
    """The hand-over journal of a dead push of ``trigger`` is lost for good (an operator says
    so): its unfinished sends become ``unknown`` (reason ``journal_lost``), since they may
    have been delivered, and the trigger's journal is no longer awaited. Returns how many."""
    with _transaction(con):
        rows: list[tuple[Any, ...]] = con.execute(
            _returning(con, "ledger/journal_lost"), {"trigger": trigger}
        ).fetchall()
        _record_events(con, rows, run_id=run_id, as_of=None)
        con.execute(sql_for(con, "guards/open_journal_forget"), {"trigger": trigger})
    return len(rows)


# -- the run log ------------------------------------------------------------------------------


def record_run(con: Connection, row: dict[str, Any]) -> None:
    """Write this run's row for one trigger into ``nudge.runs`` (replacing a retried step's).

    ``row`` holds the run's identity and every count of ``runs.RunCounts``; its keys are the
    table's column names, so the counts are listed in one place only.
    """
    frame = pl.DataFrame(
        [{**row, "errors": json.dumps(row.get("errors") or [])}], infer_schema_length=None
    )
    frame = frame.with_columns(
        [
            pl.col(c).cast(pl.Datetime("us", "UTC"))
            for c in ("as_of", "started_at", "finished_at")
            if c in frame.columns
        ]
    )
    columns = ", ".join(quote_relation(name) for name in frame.columns)
    # The errors are JSON text in the frame; PostgreSQL casts text to json only when asked.
    read = ", ".join(
        f"cast({quote_relation(name)} as json)" if name == "errors" else quote_relation(name)
        for name in frame.columns
    )
    con.register("run_row", frame.to_arrow())
    try:
        with _transaction(con):
            con.execute(
                sql_for(con, "ledger/record_run_delete"),
                {"run_id": row["run_id"], "trigger": row["trigger"]},
            )
            con.execute(sql_for(con, "ledger/record_run").format(columns=columns, values=read))
    finally:
        con.unregister("run_row")
