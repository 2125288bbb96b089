"""Dagster's run history on SQLite, without a new database engine for every event.

Every tick records some 800 Dagster events (a materialization and its planned event per dbt
model, an evaluation per dbt test, the send steps' logs). Dagster's stock SQLite event log
(``SqliteEventLogStorage``) builds a new SQLAlchemy engine and opens a new SQLite connection
for each of them, and again for its mirror row in the cross-run index; profiled on a small
warehouse, about 4,400 such openings took 3.9 s of a 17 s tick, and each commit waited for the
disk. :class:`PooledSqliteEventLogStorage` is that storage, same files and same tables (a stock
Dagster, ``make dev``'s webserver included, reads what it writes and the other way round), with
one engine per database file kept and reused, the index's connection kept open (a run's own
file is still closed after each write: see ``_engine``), and SQLite's ``synchronous=NORMAL``: in
WAL mode (Dagster's) a commit survives the process dying and only the last commits can be lost
to a power cut. nudge's exactly-once guarantees never rest on Dagster's history; they rest on
the ledger in the warehouse.

nudge writes it into the ``dagster.yaml`` of a ``DAGSTER_HOME`` it creates (``tick.py``)::

    event_log_storage:
      module: dagster_project.dagster_storage
      class: PooledSqliteEventLogStorage
      config: {}

``base_dir`` (optional) is where the event logs go; by default Dagster's own place,
``$DAGSTER_HOME/history/runs``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# A tick writes to its run's database and to the cross-run index; a long-lived process (the
# webserver, the daemon) reads many runs' databases. Keep the index and the few most recently
# used run databases open, not one file handle per run ever read.
MAX_OPEN_SHARDS = 8


def _tune(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("pragma synchronous=normal")


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's ``SqliteEventLogStorage``, its engines and its index connection kept; see the
    module doc."""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        # Before the parent's __init__: a new index database is built (and reindexed) there.
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._pid = os.getpid()
        super().__init__(base_dir or _default_base_dir(), inst_data)

    @classmethod
    def config_type(cls) -> Any:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **(config_value or {}))

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            if self._pid != os.getpid():
                # A forked child must not share its parent's open connections.
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._pid = os.getpid()
            kept = self._engines.get(shard)
            if kept is not None:
                self._engines.move_to_end(shard)
                return kept
            engine = create_engine(
                self.conn_string_for_shard(shard),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                # A run's own file is closed after each write, as stock Dagster does: closing
                # the last connection checkpoints its WAL into ``<run>.db``, and that change is
                # what the UI's live log watcher (``watch``) waits for. Kept open, a run's logs
                # would reach the UI only when its process ended. The index is watched by
                # nobody, and it is most of the openings (an asset event's mirror, its tags,
                # ``has_table``): its connection is kept.
                poolclass=None if shard == INDEX_SHARD_NAME else NullPool,
            )
            event.listen(engine, "connect", _tune)
            self._engines[shard] = engine
            while len(self._engines) > MAX_OPEN_SHARDS:
                oldest = next(s for s in self._engines if s != INDEX_SHARD_NAME)
                self._engines.pop(oldest).dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # The parent's, but with the shard's engine kept instead of built and disposed.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        # Asked hundreds of times a tick (is a newer index in place?); the parent builds an
        # engine for each answer.
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            return bool(engine.dialect.has_table(conn, table_name))

    def wipe(self) -> None:
        # The parent deletes the run databases' files: a connection kept open to one would
        # go on writing to a file no longer there.
        self._close_engines()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_engines()

    def _close_engines(self) -> None:
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
            # A forked child leaves its parent's connections open for the parent.
            inherited, self._pid = self._pid != os.getpid(), os.getpid()
        for engine in engines:
            engine.dispose(close=not inherited)


def _default_base_dir() -> str:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise RuntimeError(
            "PooledSqliteEventLogStorage needs base_dir in its config or DAGSTER_HOME set"
        )
    return os.path.join(os.path.abspath(home), "history", "runs", "")
