"""The landing store: where ``nudge serve`` keeps a consent change or a provider event until a
tick drains it.

Why not write to the warehouse directly? DuckDB allows one writing process per file, and a tick
holds it for minutes; a one-click unsubscribe must be answered at once and never lost. So the
service writes each change to this store and answers only once it is on disk, and every tick
drains the store into ``nudge.consent_changes`` before dbt builds (``consent.drain``).

Why SQLite in WAL mode? It is in the standard library, a commit with ``synchronous=FULL`` is
fsynced before it returns (the durability the answer promises), readers never block the writer
(the push-time re-check reads undrained changes while the service writes), and several service
processes on one machine can share the file: SQLite's own locks serialise their writes, and
``busy_timeout`` makes a writer wait its turn instead of failing. An append-only file per process
would need its own fsync batching, compaction and erasure; SQLite gives all three (``secure_delete``
zeroes erased rows). Beyond one machine, replicas need a store they share: the warehouse
adapter's own database (a PostgreSQL table) or a queue, behind the same four calls below.

Each change has a random ``change_id``; the drain inserts only ids the warehouse does not have,
so a store drained twice (a tick that died after copying and before marking) counts each change
once (a change a replay moved later is updated in place). The same request again (a double
click, a provider retrying the one-click POST) is the same change, moved to the later instant:
one row, and still the latest word.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .webhooks.base import EmailEvent

# Drained changes stay this long (they are in the warehouse too): the replay check and the
# push-time re-check read them; then they go.
KEEP_DRAINED = timedelta(days=30)
# A "do not mail" event drained this recently may be missing from the consent tables a send
# step reads: another run (the 5-minute transactional job beside the hourly tick) drained it
# after this run's dbt build. The push-time re-check reads such events from the store too. A
# day is far longer than any run lasts between its build and its push.
RECENTLY_DRAINED = timedelta(days=1)

SCHEMA = """
create table if not exists consent_changes (
    change_id text primary key,
    customer_id text not null,
    list text not null,
    status text not null,
    source text not null,
    send_id text,
    changed_at text not null,
    drained_at text
);
create index if not exists consent_changes_by_customer
    on consent_changes (customer_id, list, changed_at);
create index if not exists consent_changes_undrained
    on consent_changes (changed_at) where drained_at is null;
create table if not exists email_events (
    event_id text primary key,
    provider text not null,
    provider_event_id text,
    send_id text,
    email text,
    event_type text not null,
    bounce_type text,
    is_machine_open integer not null,
    url text,
    occurred_at text not null,
    received_at text not null,
    payload text,
    drained_at text
);
create index if not exists email_events_by_email on email_events (email, occurred_at);
create index if not exists email_events_undrained
    on email_events (received_at) where drained_at is null;
create index if not exists email_events_by_drain on email_events (drained_at);
"""


@dataclass(frozen=True)
class ConsentChange:
    """One person's status on one list changing, with where the change came from."""

    change_id: str
    customer_id: str
    list: str
    status: str  # subscribed | unsubscribed
    source: str  # one_click | preference_page | double_opt_in
    send_id: str | None
    changed_at: datetime


class LandingStore:
    """The store's four calls: record, read for the re-check, drain, erase. Thread-safe (one
    SQLite connection per thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._queue: list[_Request] = []
        self._queue_lock = threading.Condition()
        self._writer: threading.Thread | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as con:
            con.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"LandingStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("pragma journal_mode=wal")
            # FULL: a commit returns after the WAL is fsynced; the answer promises durability.
            con.execute("pragma synchronous=full")
            # Erased rows are overwritten with zeros, not merely unlinked.
            con.execute("pragma secure_delete=on")
            con.execute("pragma busy_timeout=30000")
            self._local.con = con
        yield con

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- the service ----------------------------------------------------------------------------

    def record(
        self,
        *,
        customer_id: str,
        list_name: str,
        status: str,
        source: str,
        send_id: str | None,
        now: datetime | None = None,
    ) -> tuple[ConsentChange, bool]:
        """Store one change durably; return it and whether it is new (False: a replay).

        Returns once the change is fsynced. Concurrent callers share commits: one writer
        thread takes every request waiting and stores them in one transaction, so one fsync
        serves them all (group commit) instead of each waiting its turn for its own.
        """
        change = _Change(customer_id, list_name, status, source, send_id, now)
        result: tuple[ConsentChange, bool] = self._commit(lambda con: self._write_one(con, change))
        return result

    def _commit(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``work`` in the writer thread's next transaction; return once it is fsynced."""
        request = _Request(work)
        with self._queue_lock:
            self._queue.append(request)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="nudge-landing-writer", daemon=True
                )
                self._writer.start()
            self._queue_lock.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _write_loop(self) -> None:
        while True:
            with self._queue_lock:
                while not self._queue:
                    # Idle: stop, and the next record starts another writer. The queue is
                    # looked at again after the timeout: a record may have come in between.
                    if not self._queue_lock.wait(timeout=30) and not self._queue:
                        self._writer = None
                        return
                batch, self._queue = self._queue, []
            try:
                results = self._write(batch)
            except BaseException as exc:  # every waiter learns its change was not stored
                for request in batch:
                    request.error = exc
                    request.done.set()
                continue
            for request, result in zip(batch, results, strict=True):
                request.result = result
                request.done.set()

    def _write(self, batch: list[_Request]) -> list[Any]:
        results: list[Any] = []
        with self._connection() as con:
            con.execute("begin immediate")
            try:
                for request in batch:
                    results.append(request.work(con))
                con.execute("commit")
            except BaseException:
                if con.in_transaction:
                    con.execute("rollback")
                raise
        return results

    @staticmethod
    def _write_one(con: sqlite3.Connection, request: _Change) -> tuple[ConsentChange, bool]:
        now = request.now or datetime.now(UTC)
        key = (request.status, request.source, request.send_id)
        latest = con.execute(
            "select change_id, status, source, send_id, changed_at from consent_changes"
            " where customer_id = ? and list = ? order by changed_at desc limit 1",
            (request.customer_id, request.list_name),
        ).fetchone()
        if latest is not None and (latest[1], latest[2], latest[3]) == key:
            # The same request again (a double click, a provider retrying the POST): the same
            # change, moved to now, so it still wins over anything recorded in between (an
            # import that subscribed them again a minute ago must not outlive a second "no").
            changed_at = max(now, _instant(latest[4]))
            con.execute(
                "update consent_changes set changed_at = ?, drained_at = null where change_id = ?",
                (_text(changed_at), latest[0]),
            )
            replayed = ConsentChange(
                latest[0], request.customer_id, request.list_name, *key, changed_at
            )
            return replayed, False
        change = ConsentChange(uuid.uuid4().hex, request.customer_id, request.list_name, *key, now)
        con.execute(
            "insert into consent_changes (change_id, customer_id, list, status, source,"
            " send_id, changed_at) values (?, ?, ?, ?, ?, ?, ?)",
            (
                change.change_id,
                change.customer_id,
                change.list,
                change.status,
                change.source,
                change.send_id,
                _text(now),
            ),
        )
        return change, True

    def latest(self, customer_id: str, list_name: str) -> ConsentChange | None:
        """The newest change the service recorded for this customer and list (the pages)."""
        rows = self.changes_for([customer_id], [list_name])
        return max(rows, key=lambda c: c.changed_at) if rows else None

    # -- the tick -------------------------------------------------------------------------------

    def changes_for(self, customer_ids: Iterable[str], lists: Sequence[str]) -> list[ConsentChange]:
        """Every change kept for these customers on these lists, drained or not: the push-time
        re-check merges them with the warehouse's (the latest wins either way)."""
        ids = list(set(customer_ids))
        if not ids or not lists:
            return []
        out: list[ConsentChange] = []
        with self._connection() as con:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                list_marks = ",".join("?" * len(lists))
                out.extend(
                    _change(row)
                    for row in con.execute(
                        f"select {_COLUMNS} from consent_changes where customer_id in ({marks})"
                        f" and list in ({list_marks})",
                        (*chunk, *lists),
                    )
                )
        return out

    def undrained(self, limit: int = 50_000) -> list[ConsentChange]:
        with self._connection() as con:
            rows = con.execute(
                f"select {_COLUMNS} from consent_changes where drained_at is null"
                " order by changed_at limit ?",
                (limit,),
            ).fetchall()
        return [_change(row) for row in rows]

    def mark_drained(self, changes: Sequence[ConsentChange], now: datetime | None = None) -> None:
        """Called once the warehouse committed them; prunes what was drained long ago.

        Only the version that was copied is marked: the same request again while the drain
        ran moved its change to a later instant (``_write_one``), which the warehouse has not
        seen. That stays undrained, and the next drain carries the new instant over."""
        now = now or datetime.now(UTC)
        with self._connection() as con:
            con.execute("begin immediate")
            try:
                con.executemany(
                    "update consent_changes set drained_at = ?"
                    " where change_id = ? and changed_at = ?",
                    [(_text(now), c.change_id, _text(c.changed_at)) for c in changes],
                )
                con.execute(
                    "delete from consent_changes where drained_at < ?",
                    (_text(now - KEEP_DRAINED),),
                )
                con.execute("commit")
            except BaseException:
                if con.in_transaction:
                    con.execute("rollback")
                raise

    # -- provider events (the webhooks) --------------------------------------------------------

    def record_events(self, events: Sequence[EmailEvent], now: datetime | None = None) -> int:
        """Store a provider's batch durably (one transaction, fsynced); return how many are new.

        A provider retrying a delivery sends events the store has: ``event_id`` is the key,
        so they are acknowledged again and stored once.
        """
        if not events:
            return 0
        received = _text(now or datetime.now(UTC))
        rows = [
            (
                e.event_id,
                e.provider,
                e.provider_event_id,
                e.send_id,
                e.email,
                e.event_type,
                e.bounce_type,
                int(e.is_machine_open),
                e.url,
                _text(e.occurred_at),
                received,
                e.payload,
            )
            for e in events
        ]

        def insert(con: sqlite3.Connection) -> int:
            before = con.total_changes
            con.executemany(
                f"insert or ignore into email_events ({_EVENT_COLUMNS})"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return con.total_changes - before

        new: int = self._commit(insert)
        return new

    def undrained_events(self, limit: int = 50_000) -> list[LandedEvent]:
        with self._connection() as con:
            rows = con.execute(
                f"select {_EVENT_COLUMNS} from email_events where drained_at is null"
                " order by received_at limit ?",
                (limit,),
            ).fetchall()
        return [_landed(row) for row in rows]

    def mark_events_drained(
        self,
        event_ids: Sequence[str],
        now: datetime | None = None,
        *,
        forget_emails: Sequence[str] = (),
    ) -> None:
        """Called once the warehouse committed them. Drained events the push-time re-check
        does not read (all but the opt-outs) go at once: the store stays small however many
        opens a list makes. Events about ``forget_emails`` (erased addresses) go in the same
        transaction, so no crash can leave them behind; opt-outs drained long ago go too."""
        now = now or datetime.now(UTC)
        addresses = [e.strip().lower() for e in forget_emails if e]
        with self._connection() as con:
            con.execute("begin immediate")
            try:
                con.executemany(
                    "update email_events set drained_at = ? where event_id = ?",
                    [(_text(now), event_id) for event_id in event_ids],
                )
                con.execute(
                    f"delete from email_events where drained_at is not null and not {_OPT_OUT}"
                )
                con.execute(
                    "delete from email_events where drained_at < ?", (_text(now - KEEP_DRAINED),)
                )
                for start in range(0, len(addresses), 500):
                    chunk = addresses[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    con.execute(f"delete from email_events where email in ({marks})", chunk)
                con.execute("commit")
            except BaseException:
                if con.in_transaction:
                    con.execute("rollback")
                raise
            if addresses:
                # secure_delete zeroed the rows in the database; copy the WAL over its old
                # frames now if no reader is in the way (never wait on the service for it:
                # nudge erase empties the WAL for certain).
                con.execute("pragma busy_timeout=1000")
                try:
                    con.execute("pragma wal_checkpoint(truncate)").fetchall()
                finally:
                    con.execute("pragma busy_timeout=30000")

    def opt_outs_for(self, emails: Iterable[str]) -> list[EmailEvent]:
        """Events that say "do not mail this address" (a hard bounce, a complaint, an
        unsubscribe at the provider), kept for these addresses, drained or not: the push-time
        re-check reads them, so one reported a second before a batch stops it."""
        addresses = sorted({e.strip().lower() for e in emails if e})
        out: list[EmailEvent] = []
        with self._connection() as con:
            for start in range(0, len(addresses), 500):
                chunk = addresses[start : start + 500]
                marks = ",".join("?" * len(chunk))
                out.extend(
                    _landed(row).event
                    for row in con.execute(
                        f"select {_EVENT_COLUMNS} from email_events where email in ({marks})"
                        f" and {_OPT_OUT}",
                        chunk,
                    )
                )
        return out

    def recent_opt_outs(self, now: datetime | None = None) -> list[EmailEvent]:
        """The "do not mail" events not drained yet or drained within ``RECENTLY_DRAINED``,
        whatever address they name (or none): the push-time re-check maps them to people
        through their send. Older ones are in the warehouse's int_consent__from_email_events,
        which every run builds after its own drain; a recent one may have been drained by
        another run after this run's build."""
        since = _text((now or datetime.now(UTC)) - RECENTLY_DRAINED)
        with self._connection() as con:
            rows = con.execute(
                f"select {_EVENT_COLUMNS} from email_events"
                f" where (drained_at is null or drained_at >= ?) and {_OPT_OUT}",
                (since,),
            ).fetchall()
        return [_landed(row).event for row in rows]

    # -- erasure ------------------------------------------------------------------------------

    def erase(
        self, customer_id: str, *, emails: Sequence[str] = (), send_ids: Sequence[str] = ()
    ) -> int:
        """Remove every drained change of this customer and every drained event about their
        addresses or sends, and their bytes from the file.

        Only drained rows: one acknowledged after the caller's drain (an unsubscribe clicked
        while ``nudge erase`` runs) is not in the warehouse yet, and deleting it would lose a
        "no" the service already answered for. The next drain copies it under the person's
        pseudonym and forgets it here (``consent.drain``, ``events.drain``)."""
        addresses = [e.strip().lower() for e in emails if e]
        with self._connection() as con:
            deleted = con.execute(
                "delete from consent_changes where customer_id = ? and drained_at is not null",
                (customer_id,),
            ).rowcount
            for column, values in (("email", addresses), ("send_id", list(send_ids))):
                for start in range(0, len(values), 500):
                    chunk = values[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    deleted += con.execute(
                        f"delete from email_events where {column} in ({marks})"
                        " and drained_at is not null",
                        chunk,
                    ).rowcount
            # Copy the WAL into the database and empty it: the deleted rows' old pages are
            # gone from both files (secure_delete zeroed them in the database). A reader in
            # the middle of a read makes the checkpoint busy: wait for it, never skip it.
            con.execute("vacuum")
            for _ in range(300):
                busy = con.execute("pragma wal_checkpoint(truncate)").fetchone()
                if busy is not None and busy[0] == 0:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"{self.path}: the WAL could not be emptied (busy readers)")
        return deleted


@dataclass(frozen=True)
class _Change:
    """One consent change as the service asked for it."""

    customer_id: str
    list_name: str
    status: str
    source: str
    send_id: str | None
    now: datetime | None


@dataclass
class _Request:
    """One piece of work waiting for the writer thread, and what became of it."""

    work: Callable[[sqlite3.Connection], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


_COLUMNS = "change_id, customer_id, list, status, source, send_id, changed_at"
# The events that say "do not mail": a hard bounce, a complaint, an unsubscribe at the provider.
_OPT_OUT = (
    "(event_type in ('complained', 'unsubscribed')"
    " or (event_type = 'bounced' and bounce_type = 'hard'))"
)
_EVENT_COLUMNS = (
    "event_id, provider, provider_event_id, send_id, email, event_type, bounce_type,"
    " is_machine_open, url, occurred_at, received_at, payload"
)


@dataclass(frozen=True)
class LandedEvent:
    """A provider event as the store keeps it: the event and when the service received it."""

    event: EmailEvent
    received_at: datetime


def _landed(row: Sequence[Any]) -> LandedEvent:
    (
        event_id,
        provider,
        provider_event_id,
        send_id,
        email,
        event_type,
        bounce_type,
        machine,
        url,
        occurred_at,
        received_at,
        payload,
    ) = row
    event = EmailEvent(
        event_id=event_id,
        provider=provider,
        provider_event_id=provider_event_id,
        send_id=send_id,
        email=email,
        event_type=event_type,
        bounce_type=bounce_type,
        is_machine_open=bool(machine),
        url=url,
        occurred_at=_instant(occurred_at),
        payload=payload,
    )
    return LandedEvent(event, _instant(received_at))


def _text(instant: datetime) -> str:
    # Fixed-width UTC text sorts as time does (the year zero-padded: %Y is not, for year 1).
    utc = instant.astimezone(UTC)
    return f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.%fZ")


def _instant(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _change(row: Sequence[object]) -> ConsentChange:
    change_id, customer_id, list_name, status, source, send_id, changed_at = row
    return ConsentChange(
        str(change_id),
        str(customer_id),
        str(list_name),
        str(status),
        str(source),
        None if send_id is None else str(send_id),
        _instant(str(changed_at)),
    )
