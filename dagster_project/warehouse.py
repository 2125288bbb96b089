"""The DuckDB warehouse: connections, the cross-process lock, the input contract, ``sql/``.

DuckDB allows one writing process per file. dbt runs in a subprocess and the send steps in the
Dagster process, and a scheduled tick can overlap a manual run, so every step that opens the
warehouse first takes an exclusive advisory lock on ``<warehouse>.lock``. That serializes dbt
and sends across processes instead of failing with DuckDB's "could not set lock" error.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def connection(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """An open connection, closed on exit; hold the warehouse lock around it to write."""
    con = connect(warehouse)
    try:
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def locked_connection(
    warehouse: Path, *, timeout: float = 1800.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse, locked against every other nudge process, and open; closed on exit."""
    with warehouse_lock(warehouse, timeout=timeout), connection(warehouse) as con:
        yield con


@cache
def sql(name: str) -> str:
    """The text of ``sql/<name>.sql``: SQL lives in files, not in Python strings."""
    return (SQL_DIR / f"{name}.sql").read_text()


def one(
    con: duckdb.DuckDBPyConnection, statement: str, params: dict[str, Any] | None = None
) -> tuple[Any, ...] | None:
    """The first row of a query, reading the result to its end.

    DuckDB keeps a result that was not read to its end open on the connection (``fetchone``
    leaves it so), and then refuses to register a frame on it; reading it all avoids that.
    """
    rows = con.execute(statement, params or {}).fetchall()
    return rows[0] if rows else None


def journal_dir(con: duckdb.DuckDBPyConnection) -> Path:
    """Where pushes journal their requests (``handover.py``): ``<warehouse>.handovers/`` beside
    the warehouse file, like its lock; a temporary folder for a database in memory."""
    row = one(con, sql("warehouse/database_path"))
    if row and row[0]:
        return Path(str(row[0]) + ".handovers")
    return Path(tempfile.gettempdir()) / "nudge-handovers"


def sql_literal(value: str) -> str:
    """A SQL string literal, for the few statements that take no parameters (``attach``)."""
    return "'" + value.replace("'", "''") + "'"


# The tables of the input contract (README): nudge reads them and never writes them.
RAW_TABLES = ("customers", "events", "subscriptions")


class MissingInputError(RuntimeError):
    """The warehouse lacks the raw tables of the input contract."""


def check_input_contract(con: duckdb.DuckDBPyConnection, warehouse: Path) -> None:
    """Fail with a clear message, before dbt, when the raw tables are not there."""
    present = {row[0] for row in con.execute(sql("warehouse/raw_relations")).fetchall()}
    missing = [f"raw.{t}" for t in RAW_TABLES if t not in present]
    if missing:
        raise MissingInputError(
            f"{warehouse} has no {', '.join(missing)}. Load your data as described in the "
            "README's input contract, point NUDGE_WAREHOUSE at the right file, or run "
            "`nudge demo` to generate a demo warehouse."
        )


def quote_relation(relation: str) -> str:
    """Quote a ``schema.table`` name read from the dbt manifest for use in SQL text."""
    parts = relation.split(".")
    if not parts or any(not p or '"' in p for p in parts):
        raise ValueError(f"not a valid relation name: {relation!r}")
    return ".".join(f'"{p}"' for p in parts)
