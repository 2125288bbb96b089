"""PostgreSQL as nudge's warehouse: a connection that takes nudge's statements as DuckDB does.

The send path is written against DuckDB's Python API: ``$name`` parameters (``?`` in a few
places), frames registered as relations for one statement, explicit ``begin``/``commit`` with
autocommit otherwise, ``fetchall``. :class:`PostgresConnection` offers the same calls over
psycopg2, so ``ledger.py`` and its callers run unchanged on both engines; the statements are the
same files in ``sql/`` where the dialects agree, and ``sql/postgres/<name>.sql`` where they do
not (``warehouse.sql``).

- Parameters: ``$name`` becomes ``%(name)s`` and ``?`` becomes ``%s`` outside quoted text and
  comments; psycopg2 quotes every value on the client, so a parameter never becomes SQL.
- A registered frame (``register(name, arrow_table)``) is a temporary table of that name,
  filled in one round trip and dropped by ``unregister``. Nested values (lists, structs) are
  stored as ``jsonb``, which is what the dbt models build on PostgreSQL (``nudge_agg_records``).
- The cross-process lock is a session-level advisory lock (``advisory_lock``), the file lock's
  counterpart: released by PostgreSQL itself if the process dies, like ``flock``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

if TYPE_CHECKING:
    import pyarrow as pa

DIALECT = "postgres"

log = logging.getLogger(__name__)

# Quoted text, quoted identifiers and comments are copied as they are; only the rest is
# scanned for parameters. (nudge's statements use neither E'' strings nor dollar quoting.)
_TOKENS = re.compile(
    r"""(?P<skip>'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/)"""
    r"""|(?P<named>\$[A-Za-z_][A-Za-z0-9_]*)"""
    r"""|(?P<positional>\?)""",
    re.DOTALL,
)


def to_pyformat(statement: str, params: Mapping[str, Any] | Sequence[Any] | None) -> str:
    """``statement`` with DuckDB's placeholders in psycopg2's: ``$name`` -> ``%(name)s``,
    ``?`` -> ``%s``. With parameters, psycopg2 reads every ``%`` as a placeholder, in strings
    and comments too, so each literal one is doubled first."""
    if not params:
        return statement

    def replace(match: re.Match[str]) -> str:
        if match.group("skip"):
            return match.group("skip")
        if match.group("named"):
            return f"%({match.group('named')[1:]})s"
        return "%s"

    return _TOKENS.sub(replace, statement.replace("%", "%%"))


def _column_type(arrow_type: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision}, {arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_null(arrow_type):
        return "text"
    if pa.types.is_nested(arrow_type):
        return "jsonb"
    raise TypeError(f"no PostgreSQL column type for a frame column of type {arrow_type}")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# PostgreSQL's column types (as ``format_type`` spells them, without a length or precision) in
# DuckDB's, for a copy of PostgreSQL's rows into a DuckDB file (``nudge backtest``). Anything
# else (arrays, intervals, a shop's own types) is copied as its text, which is what it reads
# as in PostgreSQL's CSV; the models read only the input contract's columns.
_DUCKDB_TYPES = {
    "text": "varchar",
    "character varying": "varchar",
    "character": "varchar",
    "name": "varchar",
    "citext": "varchar",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "date": "date",
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "boolean": "boolean",
    "real": "float",
    "double precision": "double",
    "json": "json",
    "jsonb": "json",
    "uuid": "uuid",
}
# DuckDB's decimals hold up to 38 digits; PostgreSQL's numeric has no limit (a double keeps the
# magnitude of a wider or unconstrained one, with about 16 significant digits).
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")


# DuckDB's column types (as its information_schema spells them) in PostgreSQL's, for a copy of
# a DuckDB file's tables into PostgreSQL (``nudge demo``, ``warehouse.copy_into_postgres``).
# Anything else goes over as text, which is what DuckDB's CSV writes of it.
_POSTGRES_TYPES = {
    "VARCHAR": "text",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "TIMESTAMP": "timestamp",
    "DATE": "date",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "numeric",
    "SMALLINT": "smallint",
    "BOOLEAN": "boolean",
    "DOUBLE": "double precision",
    "JSON": "jsonb",
    "UUID": "uuid",
    "FLOAT": "real",
    "TINYINT": "smallint",
    "UTINYINT": "smallint",
    "USMALLINT": "integer",
    "UINTEGER": "bigint",
    "UBIGINT": "numeric",
    "TIME": "time",
    "INTERVAL": "interval",
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp",
}
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


def postgres_type(duckdb_type: str) -> str:
    """The PostgreSQL type that holds a DuckDB column's values as they are (lists and structs:
    their text)."""
    spelled = duckdb_type.strip().upper()
    decimal = _DECIMAL.fullmatch(spelled)
    if decimal:
        return f"numeric({decimal.group(1)}, {decimal.group(2)})"
    return _POSTGRES_TYPES.get(spelled, "text")


def duckdb_type(postgres_type: str) -> str:
    """The DuckDB type that holds a PostgreSQL column's values as they are."""
    spelled = postgres_type.strip().lower()
    numeric = _NUMERIC.fullmatch(spelled.replace(" ", ""))
    if numeric:
        precision, scale = int(numeric.group(1)), int(numeric.group(2))
        # (PostgreSQL 15 allows a scale above the precision, DuckDB does not.)
        return f"decimal({precision}, {scale})" if scale <= precision <= 38 else "double"
    if spelled == "numeric":
        return "double"
    # timestamp(3) with time zone, character varying(64), ...: the length changes nothing.
    return _DUCKDB_TYPES.get(re.sub(r"\(\d+\)", "", spelled), "varchar")


@dataclass
class PostgresSettings:
    """Where the warehouse is. The password comes from the environment only (config.py)."""

    host: str
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)
    # The folder for what nudge keeps beside a DuckDB file (the hand-over journal).
    state_dir: Path = Path(".nudge")

    @property
    def local_name(self) -> Path:
        """The name nudge's local files for this database go beside (``<name>.handovers``,
        ``<name>.landing.sqlite``), as they go beside a DuckDB file."""
        return self.state_dir / f"postgres-{self.host}-{self.port}-{self.dbname}"

    @property
    def url(self) -> str:
        """``postgresql://user@host:port/dbname``: NUDGE_WAREHOUSE's value (no password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return (
            f"postgresql://{quote(self.user, safe='')}@{host}:{self.port}/"
            f"{quote(self.dbname, safe='')}"
        )

    def same_database(self, other: PostgresSettings) -> bool:
        return (self.host, self.port, self.user, self.dbname) == (
            other.host,
            other.port,
            other.user,
            other.dbname,
        )

    def dbt_env(self) -> dict[str, str]:
        """What points dbt's ``postgres`` target (dbt/profiles.yml) at this database. The
        password is not here: dbt reads it from DBT_ENV_SECRET_NUDGE_PG_PASSWORD itself."""
        return {
            "NUDGE_DBT_TARGET": "postgres",
            "NUDGE_PG_HOST": self.host,
            "NUDGE_PG_PORT": str(self.port),
            "NUDGE_PG_USER": self.user,
            "NUDGE_PG_DBNAME": self.dbname,
        }


class PostgresConnection:
    """A psycopg2 connection with the calls nudge makes on a DuckDB connection."""

    dialect = DIALECT

    def __init__(self, settings: PostgresSettings) -> None:
        import psycopg2
        from psycopg2.extras import register_default_json, register_default_jsonb

        self.settings = settings
        self._con = psycopg2.connect(
            host=settings.host,
            port=settings.port,
            user=settings.user,
            dbname=settings.dbname,
            password=settings.password,
            # Days, hours and "a day later" follow the session's zone, as the dbt models'
            # on-run-start requires of them.
            options="-c timezone=UTC",
            # Text in and out as UTF-8, whatever the database's encoding (COPY's files too).
            client_encoding="utf8",
            # A dead peer is noticed within about a minute instead of the kernel's two hours:
            # the advisory lock lives as long as this session.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        # DuckDB's default: every statement commits unless begin() opened a transaction.
        self._con.autocommit = True
        # JSON as text, as DuckDB returns it: the ledger's context is parsed where it is used.
        register_default_json(self._con, loads=str)
        register_default_jsonb(self._con, loads=str)
        self._cursor = self._con.cursor()

    # -- DuckDB's calls -------------------------------------------------------------------------

    def execute(
        self, statement: str, params: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> PostgresConnection:
        self._cursor.execute(to_pyformat(statement, params), params or None)
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return self._changed_rows()
        return [tuple(row) for row in self._cursor.fetchall()]

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cursor.description is None:
            changed = self._changed_rows()
            return changed[0] if changed else None
        row = self._cursor.fetchone()
        return tuple(row) if row is not None else None

    def _changed_rows(self) -> list[tuple[Any, ...]]:
        """An insert, update or delete without ``returning`` answers, on DuckDB, one row: how
        many rows it changed. psycopg2 answers nothing; callers count on DuckDB's answer."""
        status = (self._cursor.statusmessage or "").split(" ", 1)[0].upper()
        if status in ("INSERT", "UPDATE", "DELETE", "MERGE") and self._cursor.rowcount >= 0:
            return [(self._cursor.rowcount,)]
        return []

    @property
    def description(self) -> Any:
        """The last result's columns (``d[0]`` is a name), as DuckDB's ``description``."""
        return self._cursor.description

    def begin(self) -> None:
        self._cursor.execute("begin")

    def commit(self) -> None:
        self._cursor.execute("commit")

    def rollback(self) -> None:
        self._cursor.execute("rollback")

    def register(self, name: str, frame: Any) -> None:
        """``frame`` (Arrow, or a frame with ``to_arrow``: polars) as a temporary table
        ``name``, replacing one registered before."""
        import pyarrow as pa
        from psycopg2.extras import execute_values

        if not isinstance(frame, pa.Table):
            frame = frame.to_arrow()

        table = quote_identifier(name)
        columns = ", ".join(
            f"{quote_identifier(f.name)} {_column_type(f.type)}" for f in frame.schema
        )
        self._cursor.execute(f"drop table if exists pg_temp.{table}")
        self._cursor.execute(f"create temp table {table} ({columns})")
        if not frame.num_rows:
            return
        nested = [pa.types.is_nested(f.type) for f in frame.schema]
        rows = [
            tuple(
                json.dumps(value, default=_json_default)
                if is_nested and value is not None
                else value
                for value, is_nested in zip(row.values(), nested, strict=True)
            )
            for row in frame.to_pylist()
        ]
        execute_values(self._cursor, f"insert into {table} values %s", rows, page_size=1000)

    def unregister(self, name: str) -> None:
        if self._in_failed_transaction():
            # Any statement would fail and hide the error that got here; the rollback that
            # follows drops a table created in the transaction, and register() replaces one.
            return
        self._cursor.execute(f"drop table if exists pg_temp.{quote_identifier(name)}")

    def _in_failed_transaction(self) -> bool:
        from psycopg2.extensions import TRANSACTION_STATUS_INERROR

        return bool(self._con.get_transaction_status() == TRANSACTION_STATUS_INERROR)

    def cursor(self) -> PostgresConnection:
        """Another connection to the same database (DuckDB's ``cursor()`` is one)."""
        return PostgresConnection(self.settings)

    def close(self) -> None:
        self._con.close()

    # -- PostgreSQL's own ------------------------------------------------------------------------

    def begin_snapshot(self) -> None:
        """A read-only transaction that sees one instant of the database in every statement
        (committed or rolled back by the caller): tables read one after another agree."""
        self._cursor.execute("begin transaction isolation level repeatable read, read only")

    def copy_out(self, statement: str, handle: BinaryIO) -> None:
        """Run ``COPY ... TO STDOUT`` and write what it streams into ``handle`` (bytes, in
        the client's encoding: UTF-8)."""
        self._cursor.copy_expert(statement, handle)

    def copy_in(self, statement: str, handle: BinaryIO) -> int:
        """Run ``COPY ... FROM STDIN`` with what ``handle`` holds; returns the rows it loaded."""
        self._cursor.copy_expert(statement, handle)
        return int(self._cursor.rowcount)

    @property
    def closed(self) -> bool:
        return bool(self._con.closed)

    def try_advisory_lock(self, key: int) -> bool:
        self._cursor.execute("select pg_try_advisory_lock(%s)", (key,))
        row = self._cursor.fetchone()
        return bool(row and row[0])

    def advisory_unlock(self, key: int) -> None:
        self._cursor.execute("select pg_advisory_unlock(%s)", (key,))
        self._cursor.fetchall()


# The advisory lock's key: one per warehouse database, the same in every nudge process. Any
# fixed 64-bit number works; this one is "nudge" in ASCII.
LOCK_KEY = int.from_bytes(b"nudge", "big")


class AdvisoryLockTimeout(TimeoutError):
    """Another nudge process held the warehouse's advisory lock longer than the wait allowed."""


@contextlib.contextmanager
def advisory_lock(
    con: PostgresConnection, *, timeout: float = 1800.0, poll: float = 0.2
) -> Iterator[None]:
    """Hold the warehouse's lock on ``con``'s session; wait up to ``timeout`` seconds.

    A session lock, not a transaction lock: the ledger's own transactions begin and commit
    inside it. If the process dies, PostgreSQL ends the session and the lock with it. Take it
    on the connection that does the work: a lock held by another, idle session could be lost
    (a server timeout, a terminated backend) while the work went on unprotected; on the
    working session, losing the lock also stops the work.
    """
    deadline = time.monotonic() + timeout
    while not con.try_advisory_lock(LOCK_KEY):
        if time.monotonic() >= deadline:
            raise AdvisoryLockTimeout(
                f"database {con.settings.dbname} on {con.settings.host} is locked by another "
                f"nudge run; waited {timeout:.0f}s"
            )
        time.sleep(poll)
    try:
        yield
    finally:
        _unlock(con)


@contextlib.contextmanager
def locked_session(
    settings: PostgresSettings, *, timeout: float = 1800.0
) -> Iterator[PostgresConnection]:
    """A new session holding the warehouse's lock (``advisory_lock``); closed on exit."""
    con = PostgresConnection(settings)
    try:
        with advisory_lock(con, timeout=timeout):
            yield con
    finally:
        con.close()


def _unlock(con: PostgresConnection) -> None:
    """Release the lock; a session that is gone (or a transaction left failed) has released
    it or will with the session, which the caller closes. Never hides the error in flight."""
    import psycopg2

    if con.closed:
        return
    try:
        con.advisory_unlock(LOCK_KEY)
    except psycopg2.Error:
        log.warning("could not release the warehouse's advisory lock; closing the session does")
