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
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import duckdb

from .config import SQL_DIR, Settings
from .postgres import DIALECT, PostgresConnection, locked_session, postgres_type, quote_identifier

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


class Connection(Protocol):
    """What nudge calls on a warehouse connection: DuckDB's own, or ``postgres.py``'s."""

    def execute(self, statement: str, params: Any = None, /) -> Any: ...
    def begin(self) -> Any: ...
    def commit(self) -> Any: ...
    def rollback(self) -> Any: ...
    def register(self, name: str, frame: Any, /) -> Any: ...
    def unregister(self, name: str, /) -> Any: ...
    def close(self) -> Any: ...


Errors = tuple[type[Exception], ...]


def _database_errors() -> tuple[Errors, Errors, Errors]:
    missing: Errors = (duckdb.CatalogException,)
    missing_column: Errors = (duckdb.BinderException,)
    try:
        import psycopg2
        from psycopg2 import errors
    except ImportError:  # installed with the postgres extra only
        return (duckdb.Error,), missing, missing + missing_column
    return (
        (duckdb.Error, psycopg2.Error),
        (*missing, errors.UndefinedTable),
        (*missing, *missing_column, errors.UndefinedTable, errors.UndefinedColumn),
    )


# What a failed statement raises on either engine; what a statement reading a relation that
# does not exist (yet) raises; and that, or a column missing from a relation (one an older
# release built).
DATABASE_ERRORS, MISSING_RELATION_ERRORS, MISSING_ERRORS = _database_errors()


def dialect(con: Connection) -> str:
    """``duckdb``, or the ``dialect`` a connection of another engine names."""
    return str(getattr(con, "dialect", "duckdb"))


def open_warehouse(warehouse: Path | Settings) -> Connection:
    """An unlocked connection to a DuckDB file, or to the warehouse of ``Settings`` (its
    DuckDB file, or its PostgreSQL database): for reads, and for work on a copy or a database
    of its own. Whoever writes the live warehouse takes ``locked_warehouse`` instead."""
    if isinstance(warehouse, Settings):
        if warehouse.postgres is not None:
            return PostgresConnection(warehouse.postgres)
        warehouse = warehouse.warehouse
    return connect(warehouse)


@contextlib.contextmanager
def locked_warehouse(settings: Settings, *, timeout: float = 1800.0) -> Iterator[Connection]:
    """The warehouse of ``settings``, locked against every other nudge process, and open: a
    DuckDB file behind its lock file, or a PostgreSQL database behind its advisory lock, held
    by the very session that does the work (``postgres.advisory_lock``)."""
    if settings.postgres is None:
        with locked_connection(settings.warehouse, timeout=timeout) as duck:
            yield duck
        return
    with locked_session(settings.postgres, timeout=timeout) as con:
        yield con


@cache
def sql(name: str, dialect: str = "duckdb") -> str:
    """The text of ``sql/<name>.sql``: SQL lives in files, not in Python strings.

    Another engine's ``sql/<dialect>/<name>.sql`` replaces it where the dialects differ; most
    statements are one file for both."""
    if dialect != "duckdb":
        own = SQL_DIR / dialect / f"{name}.sql"
        if own.exists():
            return own.read_text()
    return (SQL_DIR / f"{name}.sql").read_text()


def sql_for(con: Connection, name: str) -> str:
    """``sql(name)`` in the dialect of ``con``'s engine."""
    return sql(name, dialect(con))


def one(
    con: Connection, statement: str, params: dict[str, Any] | None = None
) -> tuple[Any, ...] | None:
    """The first row of a query, reading the result to its end.

    DuckDB keeps a result that was not read to its end open on the connection (``fetchone``
    leaves it so), and then refuses to register a frame on it; reading it all avoids that.
    """
    rows = con.execute(statement, params or {}).fetchall()
    return rows[0] if rows else None


def journal_dir(con: Connection) -> Path:
    """Where pushes journal their requests (``handover.py``): ``<warehouse>.handovers/`` beside
    the warehouse file, like its lock; a temporary folder for a database in memory; for a
    PostgreSQL warehouse, a folder per server and database in nudge's state folder."""
    settings = getattr(con, "settings", None)
    if dialect(con) == "postgres" and settings is not None:
        return settings.local_name.with_name(settings.local_name.name + ".handovers")
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


def check_input_contract(con: Connection, warehouse: Path | str) -> None:
    """Fail with a clear message, before dbt, when the raw tables are not there. ``warehouse``
    names it in the message (the file, or the database)."""
    present = {row[0] for row in con.execute(sql_for(con, "warehouse/raw_relations")).fetchall()}
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


# -- a DuckDB file's tables into PostgreSQL (nudge demo) ----------------------------------------


def copy_into_postgres(
    source: duckdb.DuckDBPyConnection, target: PostgresConnection, schema: str, folder: Path
) -> dict[str, int]:
    """Copy every table of ``schema`` from a DuckDB file into PostgreSQL, as a shop's loader
    would have put them there: into the table of that name where the database has one
    (nudge's own, from its migrations), emptied first, else into a new one of the same column
    types (``postgres.postgres_type``). Rows go over as CSV through a file in ``folder``:
    DuckDB's writer and PostgreSQL's COPY, no row through Python. The caller owns the
    transaction. Returns the rows copied per ``schema.table``."""
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in source.execute(
        sql("warehouse/schema_columns"), {"schema_name": schema}
    ).fetchall():
        tables.setdefault(table, []).append((column, data_type))
    target.execute(sql("warehouse/create_schema").format(schema=quote_identifier(schema)))
    copied: dict[str, int] = {}
    for table, columns in tables.items():
        relation = f"{quote_identifier(schema)}.{quote_identifier(table)}"
        found = one(target, sql("warehouse/table_exists", DIALECT), {"qualified_name": relation})
        if found and found[0]:
            target.execute(sql("warehouse/truncate", DIALECT).format(relation=relation))
        else:
            definitions = ", ".join(
                f"{quote_identifier(name)} {postgres_type(data_type)}"
                for name, data_type in columns
            )
            target.execute(
                sql("warehouse/create_table", DIALECT).format(
                    relation=relation, column_definitions=definitions
                )
            )
        path = folder / f"{schema}.{table}.csv"
        source.execute(
            sql("warehouse/export_csv").format(relation=relation, path=sql_literal(str(path)))
        )
        column_list = ", ".join(quote_identifier(name) for name, _ in columns)
        copy_in = sql("warehouse/copy_in", DIALECT).format(
            relation=relation, column_list=column_list
        )
        with path.open("rb") as handle:
            loaded = target.copy_in(copy_in, handle)
        path.unlink()
        found = one(source, sql("warehouse/row_count").format(relation=relation))
        if not found or loaded != found[0]:
            raise RuntimeError(
                f"the copy of {schema}.{table} into PostgreSQL loaded {loaded} rows, not "
                f"{found[0] if found else '?'}"
            )
        copied[f"{schema}.{table}"] = loaded
    return copied


# -- compaction (nudge erase) -----------------------------------------------------------------


@dataclass(frozen=True)
class Compaction:
    """What :func:`compact` did: the file's size before and after, and how long it took."""

    bytes_before: int
    bytes_after: int
    seconds: float


class CompactionError(RuntimeError):
    """The compacted copy did not match the warehouse; the warehouse was left as it was."""


def compact(warehouse: Path) -> Compaction:
    """Rewrite the warehouse file with only its live data, and swap the copy in atomically.

    DuckDB reuses the blocks that deletes, updates and dbt's table rebuilds free, but does not
    zero them, so old values stay readable in the file until overwritten. A compaction copies
    the database (``COPY FROM DATABASE``: schemas, tables with their constraints, views,
    sequences, macros, types, indexes and comments) into a new file beside it, checks the copy
    against the original (every catalog object and comment, every table's row count), then
    renames it over the original: the old bytes go with the old file. The caller holds the
    warehouse lock and has no connection open; a reader that had the old file open keeps
    reading it until it reopens.
    """
    started = time.monotonic()
    wal = warehouse.with_name(warehouse.name + ".wal")
    before = warehouse.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    # A folder of its own, on the same file system (the rename must not copy), and a file of
    # the same name: DuckDB names a file's catalog after it.
    workdir = Path(tempfile.mkdtemp(prefix=f".{warehouse.name}.compact-", dir=warehouse.parent))
    copy = workdir / warehouse.name
    try:
        con = connect(warehouse)
        try:
            con.execute(sql("privacy/checkpoint"))  # the WAL into the file, for the copy
            row = one(con, sql("privacy/current_database"))
            source = str(row[0]) if row else warehouse.stem
            con.execute(sql("privacy/compact_attach").format(path=sql_literal(str(copy))))
            con.execute(sql("privacy/compact_copy").format(source=quote_identifier(source)))
            _check_copy(con, source, "nudge_compacted")
            con.execute(sql("privacy/compact_detach"))
        finally:
            con.close()
        if wal.exists() or copy.with_name(copy.name + ".wal").exists():
            raise CompactionError(f"{warehouse}: a write-ahead log is left after closing")
        _fsync(copy)
        os.replace(copy, warehouse)
        _fsync(warehouse.parent)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return Compaction(before, warehouse.stat().st_size, time.monotonic() - started)


def _check_copy(con: duckdb.DuckDBPyConnection, source: str, copy: str) -> None:
    catalogs = [
        con.execute(sql("privacy/compact_catalog"), {"database": name}).fetchall()
        for name in (source, copy)
    ]
    if catalogs[0] != catalogs[1]:
        differing = sorted(set(catalogs[0]) ^ set(catalogs[1]))[:5]
        raise CompactionError(
            f"the compacted copy's catalog differs from the warehouse's: {differing}"
        )
    tables = con.execute(sql("privacy/compact_tables"), {"database": source}).fetchall()
    for schema, table in tables:
        counts = [
            one(
                con,
                sql("privacy/compact_row_count").format(
                    relation=".".join(quote_identifier(p) for p in (catalog, schema, table))
                ),
            )
            for catalog in (source, copy)
        ]
        if counts[0] != counts[1]:
            raise CompactionError(
                f"the compacted copy of {schema}.{table} has {counts[1]} rows, not {counts[0]}"
            )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
