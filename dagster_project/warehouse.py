"""The DuckDB warehouse: connections, the cross-process lock, and the SQL files in ``sql/``.

DuckDB allows one writing process per file. dbt runs in a subprocess and the send steps in the
Dagster process, and a scheduled tick can overlap a manual run, so every step that opens the
warehouse first takes an exclusive advisory lock on ``<warehouse>.lock``. That serializes dbt
and sends across processes instead of failing with DuckDB's "could not set lock" error.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import duckdb

from .config import SQL_DIR

log = logging.getLogger(__name__)


class WarehouseLockTimeout(TimeoutError):
    """Another nudge process held the warehouse for longer than the wait allowed."""


@contextlib.contextmanager
def warehouse_lock(
    warehouse: Path, *, timeout: float = 1800.0, poll: float = 0.2
) -> Iterator[None]:
    """Hold the warehouse's advisory lock; wait up to ``timeout`` seconds for another holder."""
    lock_path = warehouse.with_name(warehouse.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(lock_path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WarehouseLockTimeout(
                        f"{warehouse} is locked by another nudge run (lock file {lock_path}); "
                        f"waited {timeout:.0f}s"
                    ) from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def connect(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """Open the warehouse with UTC as the session time zone, so timestamps print in UTC."""
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(warehouse))
    con.execute("set TimeZone = 'UTC'")
    return con


@cache
def sql(name: str) -> str:
    """The text of ``sql/<name>.sql``: SQL lives in files, not in Python strings."""
    return (SQL_DIR / f"{name}.sql").read_text()


def quote_relation(relation: str) -> str:
    """Quote a ``schema.table`` name read from the dbt manifest for use in SQL text."""
    parts = relation.split(".")
    if not parts or any(not p or '"' in p for p in parts):
        raise ValueError(f"not a valid relation name: {relation!r}")
    return ".".join(f'"{p}"' for p in parts)
