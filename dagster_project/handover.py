"""The hand-over journal (``nudge.handovers``): which requests are on the wire, durably.

A provider hands one request at a time to the network; dispatch settles a whole batch in the
ledger once the provider returns. Between the two, a crash must not leave the whole batch in
doubt: only what was really handed over may have been delivered. So every request is written
here twice, by the provider's worker threads:

* ``handing_over(send_ids, key)`` just before the request goes out; it returns only once that
  is committed. A send with no hand-over never left this process (a crash returns it to
  ``planned``, and the next tick sends it);
* ``answered(results)`` as soon as the answer is read. A send whose answer is here was settled
  by the provider even if the ledger never heard of it (a crash settles it from here);
* ``returned(send_ids)`` when the provider refused a batch request whole and it is about to be
  split to find its bad rows: those sends are off the wire again until a half is handed over.

What a crash leaves in doubt is therefore a hand-over without an answer: at most one request
per worker, because a worker's next hand-over is committed together with (after) its previous
answer. Through a provider without idempotency keys that is at most ``max_concurrency``
one-message requests, or one batch request; an idempotent provider resends it under its key.

Why a journal table rather than a status update per request: DuckDB updates the ledger with a
scan (it does not use the primary-key index for updates), so an update per request would cost
a ledger scan per request; appending to a small table costs a commit. Commits are grouped: one
thread writes whatever the workers queued since its last commit, in one transaction, so eight
workers pay for about one commit per round of requests, not eight.

The rows of a batch are deleted in the same transaction as the batch's ledger settle
(``ledger.settle``), so the table only ever holds the batch being pushed, or what a crashed run
left; ``ledger.recover`` reads and clears those.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl

from . import failpoints
from .providers import HandoverError, SendResult
from .warehouse import sql

# The journal's columns, in the order of sql/ledger/migrations (nudge.handovers).
_SCHEMA: dict[str, Any] = {
    "run_id": pl.String,
    "trigger": pl.String,
    "as_of": pl.Datetime("us", "UTC"),
    "send_id": pl.String,
    "seq": pl.Int64,
    "event": pl.String,
    "request_key": pl.String,
    "status": pl.String,
    "provider_message_id": pl.String,
    "error": pl.String,
    "attempts": pl.Int32,
    "retryable": pl.Boolean,
    "recorded_at": pl.Datetime("us", "UTC"),
}


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    seq: int


class HandoverJournal:
    """Records a run's requests in ``nudge.handovers``; one per trigger push (see module doc).

    Used from the provider's worker threads; its own thread commits on a cursor of ``con``
    (the caller's connection stays idle while the provider sends). Use as a context manager,
    or call :meth:`close`.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        run_id: str,
        trigger: str,
        as_of: datetime | None = None,
    ) -> None:
        self.run_id = run_id
        self.trigger = trigger
        self.as_of = as_of
        self._cursor = con.cursor()
        self._cursor.execute("set TimeZone = 'UTC'")
        self._seq = itertools.count(1)
        self._queue: list[_Pending] = []
        self._enqueued = 0  # the highest seq handed to the writer
        self._committed = 0  # the highest seq durably written
        self._failure: BaseException | None = None
        self._closed = False
        self._wake = threading.Condition()
        self.commits = 0
        self._thread = threading.Thread(
            target=self._write_loop, name=f"nudge-journal-{trigger}", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> HandoverJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what providers call -------------------------------------------------------------

    def handing_over(self, send_ids: Sequence[str], request_key: str | None) -> None:
        """Record that a request carrying ``send_ids`` is about to go out; return once durable.

        Raises :class:`HandoverError` if it could not be recorded: the request must not go
        out then (nothing is sent that the ledger could not account for).
        """
        now = datetime.now(UTC)
        seq = self._enqueue(
            [
                self._row(send_id, "handed_over", now, request_key=request_key)
                for send_id in send_ids
            ]
        )
        self._wait_for(seq)
        failpoints.hit("after_handover")

    def answered(self, results: Sequence[SendResult]) -> None:
        """Record a request's answer. Does not wait: the worker's next hand-over, or
        :meth:`flush`, commits it first."""
        failpoints.hit("after_send")
        now = datetime.now(UTC)
        self._enqueue(
            [
                self._row(
                    r.send_id,
                    "answered",
                    now,
                    status=r.status,
                    provider_message_id=r.provider_message_id,
                    error=r.error,
                    attempts=r.attempts,
                    retryable=r.retryable,
                )
                for r in results
            ]
        )

    def returned(self, send_ids: Sequence[str]) -> None:
        """Record that a request was refused whole (and will be split): its sends are no longer
        in doubt from it. Does not wait, as :meth:`answered`."""
        now = datetime.now(UTC)
        self._enqueue([self._row(send_id, "returned", now) for send_id in send_ids])

    # -- what dispatch calls -------------------------------------------------------------

    def flush(self) -> None:
        """Wait until everything recorded so far is durable (before the batch settles)."""
        with self._wake:
            last = self._enqueued
        self._wait_for(last)

    def close(self) -> None:
        """Flush, stop the writer thread and close its cursor. Safe to call twice."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        self._thread.join()
        self._cursor.close()

    # -- internals -----------------------------------------------------------------------

    def _row(self, send_id: str, event: str, at: datetime, **values: Any) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "as_of": self.as_of,
            "send_id": send_id,
            "event": event,
            "recorded_at": at,
            **values,
        }

    def _enqueue(self, rows: list[dict[str, Any]]) -> int:
        with self._wake:
            if self._failure is not None:
                raise HandoverError(f"the hand-over journal failed: {self._failure}")
            if self._closed:
                raise HandoverError("the hand-over journal is closed")
            seq = next(self._seq)
            for row in rows:
                row["seq"] = seq
            self._queue.append(_Pending(rows, seq))
            self._enqueued = seq
            self._wake.notify_all()
            return seq

    def _wait_for(self, seq: int) -> None:
        with self._wake:
            while self._committed < seq and self._failure is None:
                self._wake.wait()
            if self._committed < seq:
                raise HandoverError(f"the hand-over journal failed: {self._failure}")

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return  # closed, nothing left to write
                pending, self._queue = self._queue, []
            try:
                self._write([row for p in pending for row in p.rows])
            except BaseException as exc:
                with self._wake:
                    self._failure = exc
                    self._wake.notify_all()
                return
            with self._wake:
                self._committed = pending[-1].seq
                self.commits += 1
                self._wake.notify_all()

    def _write(self, rows: list[dict[str, Any]]) -> None:
        frame = pl.DataFrame(rows, schema=_SCHEMA)
        cursor = self._cursor
        cursor.register("journal_rows", frame.to_arrow())
        try:
            cursor.begin()
            try:
                cursor.execute(sql("ledger/handovers_append"))
            except BaseException:
                cursor.rollback()
                raise
            cursor.commit()
        finally:
            cursor.unregister("journal_rows")
