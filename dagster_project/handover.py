"""The hand-over journal: which requests are on the wire, durably, beside the warehouse.

A provider hands one request at a time to the network; dispatch settles a whole batch in the
ledger once the provider returns. Between the two, a crash must not leave the whole batch in
doubt: only what was really handed over may have been delivered. So every request is written
to the journal by the provider's worker threads:

* ``handing_over(send_ids, key)`` just before the request goes out; it returns only once that
  is on disk (``fdatasync``). A send with no hand-over never left this process: a crash returns
  it to ``planned``, and the next tick sends it;
* ``answered(results)`` as soon as the answer is read. A send whose answer is here was settled
  by the provider even if the ledger never heard of it: a crash settles it from here;
* ``returned(send_ids)`` when the provider refused a batch request whole and it is about to be
  split to find its bad rows: those sends are off the wire again until a half is handed over.

What a crash leaves in doubt is therefore a hand-over without an answer: at most one request
per worker, because a worker's next hand-over is written together with (after) its previous
answer. Through a provider without idempotency keys that is at most ``max_concurrency``
one-message requests, or one batch request; an idempotent provider resends it under its key.

Why a file and not a table: a journal row must be durable before its request goes out, and a
DuckDB insert and commit costs milliseconds of CPU per group (it halved the push's throughput),
while appending a few JSON lines and ``fdatasync`` costs a fraction of one. Writes are grouped
anyway: one thread writes whatever the workers queued since its last sync, so eight workers pay
for about one sync per round of requests. The journal is crash-recovery state, like a
database's write-ahead log, not business state: the ledger in the warehouse stays the source of
truth. Each push writes its own file in ``<warehouse>.handovers/`` and deletes it once every
batch is settled; a file left behind belongs to a push that died, and the next tick of that
trigger reads it (:func:`read`), settles what it says (``ledger.resume``), then deletes it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from . import failpoints
from .providers import HandoverError, SendResult

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"

# The columns of a journal row, as ``ledger.resume`` reads them.
SCHEMA: dict[str, Any] = {
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
    # The order events happened in (added by ``read``): files by when their push began, then
    # ``seq`` within a file. Not ``recorded_at``: a wall clock stepped back mid-push (NTP, a
    # resumed VM) would reorder one push's events, and a hand-over read as before its batch's
    # refusal would look settled, and be sent again.
    "journal_order": pl.Int64,
}


@dataclass
class _Pending:
    lines: bytes
    seq: int


class HandoverJournal:
    """Records one push's requests in a file of ``directory``; see the module docstring.

    Used from the provider's worker threads; its own thread writes and syncs. Use as a context
    manager (the file stays if the block raises: the push did not settle everything) or call
    :meth:`close`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        run_id: str,
        trigger: str,
        as_of: datetime | None = None,
    ) -> None:
        self.run_id = run_id
        self.trigger = trigger
        self.as_of = as_of
        self.path = directory / f"{trigger}.{uuid.uuid4().hex}{SUFFIX}"
        self._fd: int | None = None
        self._seq = itertools.count(1)
        self._queue: list[_Pending] = []
        self._enqueued = 0  # the highest seq handed to the writer
        self._written = 0  # the highest seq on disk
        self._failure: BaseException | None = None
        self._closed = False
        self._stopped = False  # no more hand-overs: the push was interrupted
        self._wake = threading.Condition()
        self.syncs = 0
        self._thread = threading.Thread(
            target=self._write_loop, name=f"nudge-journal-{trigger}", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> HandoverJournal:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.close(discard=exc_type is None)

    # -- what providers call -------------------------------------------------------------

    def handing_over(self, send_ids: Sequence[str], request_key: str | None) -> None:
        """Record that a request carrying ``send_ids`` is about to go out; return once it is
        on disk.

        Raises :class:`HandoverError` if it could not be recorded: the request must not go
        out then (nothing is sent that the ledger could not account for).
        """
        seq = self._enqueue("handed_over", send_ids, request_key=request_key)
        self._wait_for(seq)
        failpoints.hit("after_handover")

    def answered(self, results: Sequence[SendResult]) -> None:
        """Record a request's answer. Does not wait: the worker's next hand-over, or
        :meth:`flush`, syncs it first."""
        failpoints.hit("after_send")
        self._enqueue("answered", [r.send_id for r in results], results=results)

    def returned(self, send_ids: Sequence[str]) -> None:
        """Record that a request was refused whole (and will be split): its sends are no longer
        in doubt from it. Does not wait, as :meth:`answered`."""
        self._enqueue("returned", send_ids)

    # -- what dispatch calls -------------------------------------------------------------

    def flush(self) -> None:
        """Wait until everything recorded so far is on disk (before the batch settles)."""
        with self._wake:
            last = self._enqueued
        self._wait_for(last)

    def stop_handovers(self) -> None:
        """No request goes out from now on (the push was interrupted): :meth:`handing_over`
        raises, so the provider stops before its next request, while the answers of requests
        already on the wire are still recorded as they come back. Closing instead would lose
        those answers, and sends whose outcome was known would be left in doubt."""
        with self._wake:
            self._stopped = True

    @property
    def accepting_handovers(self) -> bool:
        with self._wake:
            return not (self._closed or self._stopped)

    def close(self, *, discard: bool = True) -> None:
        """Flush, stop the writer and close the file; delete it when ``discard`` (every batch
        was settled). Safe to call twice."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
        if discard and self._failure is None:
            self.path.unlink(missing_ok=True)

    # -- internals -----------------------------------------------------------------------

    def _enqueue(
        self,
        event: str,
        send_ids: Sequence[str],
        *,
        request_key: str | None = None,
        results: Sequence[SendResult] = (),
    ) -> int:
        by_id = {r.send_id: r for r in results}
        with self._wake:
            if self._failure is not None:
                raise HandoverError(f"the hand-over journal failed: {self._failure}")
            if self._closed:
                raise HandoverError("the hand-over journal is closed")
            if self._stopped and event == "handed_over":
                raise HandoverError("the push was interrupted: no more requests go out")
            seq = next(self._seq)
            # Taken under the lock: journals of the same run and trigger (a retried step) are
            # ordered by it, events within one journal by seq.
            now = datetime.now(UTC).isoformat()
            lines = []
            for send_id in send_ids:
                row: dict[str, Any] = {
                    "run_id": self.run_id,
                    "trigger": self.trigger,
                    "as_of": self.as_of.isoformat() if self.as_of else None,
                    "send_id": send_id,
                    "seq": seq,
                    "event": event,
                    "request_key": request_key,
                    "recorded_at": now,
                }
                result = by_id.get(send_id)
                if result is not None:
                    row.update(
                        status=result.status,
                        provider_message_id=result.provider_message_id,
                        error=result.error,
                        attempts=result.attempts,
                        retryable=result.retryable,
                    )
                lines.append(json.dumps(row, separators=(",", ":")))
            self._queue.append(_Pending(("\n".join(lines) + "\n").encode(), seq))
            self._enqueued = seq
            self._wake.notify_all()
            return seq

    def _wait_for(self, seq: int) -> None:
        with self._wake:
            while self._written < seq and self._failure is None:
                self._wake.wait()
            if self._written < seq:
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
                self._write(b"".join(p.lines for p in pending))
            except BaseException as exc:
                log.error("the hand-over journal %s failed: %s", self.path, exc)
                with self._wake:
                    self._failure = exc
                    self._wake.notify_all()
                return
            with self._wake:
                self._written = pending[-1].seq
                self.syncs += 1
                self._wake.notify_all()

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            # The new file's directory entry must survive a crash too.
            _sync_directory(self.path.parent)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fdatasync(self._fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(
    directory: Path, trigger: str, *, as_of: datetime | None = None
) -> tuple[pl.DataFrame, list[Path]]:
    """What pushes of ``trigger`` that did not finish left in ``directory``, and their files.

    A line that does not parse is the end of a write that a crash cut short: it was never
    synced, so its hand-over was never acknowledged and its request never went out.

    ``as_of``: only the pushes of ticks at or before it. A run for an earlier instant can get
    the lock after a later tick's push died (the hourly run queued behind a 5-minute one, a
    re-executed run): ``resume`` leaves that tick's rows alone, so its journal must stay too,
    for a tick at or after it to settle. Deleted with them, its sends on the wire would look
    never handed over, and be sent again.
    """
    files = pending(directory, trigger)
    pushes: list[list[dict[str, Any]]] = []
    read_files: list[Path] = []
    for path in files:
        found: list[dict[str, Any]] = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(json.JSONDecodeError):
                    row = json.loads(line)
                    if isinstance(row, dict) and row.get("trigger") == trigger:
                        found.append(row)
        for row in found:
            for name in ("as_of", "recorded_at"):
                if row.get(name):
                    row[name] = datetime.fromisoformat(row[name])
        later = [
            row["as_of"] for row in found if as_of and row.get("as_of") and row["as_of"] > as_of
        ]
        if later:
            log.warning(
                "%s: %s is the journal of a push for a later tick (%s) that did not finish; "
                "left for a tick at or after it",
                trigger,
                path.name,
                max(later).isoformat(),
            )
            continue
        if found:
            pushes.append(found)
        read_files.append(path)
    rows: list[dict[str, Any]] = []
    for found in sorted(pushes, key=_began):
        for row in sorted(found, key=lambda row: row.get("seq") or 0):
            rows.append({**row, "journal_order": len(rows)})
    return pl.DataFrame(rows, schema=SCHEMA), read_files


def _began(push: list[dict[str, Any]]) -> datetime:
    """When a push began: the first time it recorded (every line nudge writes has one)."""
    return min(
        (row["recorded_at"] for row in push if row.get("recorded_at")),
        default=datetime.max.replace(tzinfo=UTC),
    )


def pending(directory: Path, trigger: str) -> list[Path]:
    """The journal files of ``trigger``'s unfinished pushes in ``directory``."""
    return sorted(directory.glob(f"{trigger}.*{SUFFIX}")) if directory.is_dir() else []


def discard(files: Sequence[Path]) -> None:
    """Delete journal files whose contents the ledger now holds."""
    for path in files:
        path.unlink(missing_ok=True)
