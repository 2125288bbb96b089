"""A real PostgreSQL server for the tests, started from Debian's ``postgresql`` package.

Each server is a new cluster in a temporary folder on a free loopback port, with its socket in
that folder, fsync off (a crash of the test machine loses nothing worth keeping), stopped and
removed when the context exits. Connections over TCP, as dbt's, need the password the server
generates (SCRAM), so the tests pass it the way a user must: in the environment. PostgreSQL
refuses to run as root, so as root (CI, these machines) the cluster belongs to the package's
``postgres`` user and is started through ``runuser``.

Tests that need a server skip when the binaries are missing, unless ``NUDGE_REQUIRE_POSTGRES``
is set (``.ci/run`` installs the package and sets it), so a fresh clone's ``make test`` still
passes without it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dagster_project.config import POSTGRES_PASSWORD_VAR, SQL_DIR, STATE_DIR
from dagster_project.postgres import PostgresConnection, PostgresSettings
from dagster_project.warehouse import copy_into_postgres
from tests.support.processes import free_port

REQUIRE_ENV = "NUDGE_REQUIRE_POSTGRES"


def postgres_bindir() -> Path | None:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    root = Path("/usr/lib/postgresql")
    found = sorted(
        (p / "bin" for p in root.glob("*") if (p / "bin" / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def require_postgres() -> Path:
    """The server's binaries, or skip (fail where CI says the server must be there)."""
    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (Debian package postgresql)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message + f"; {REQUIRE_ENV} is set")
        pytest.skip(message)
    return bindir


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    dbname: str
    password: str = field(repr=False)

    def settings(self, state_dir: Path = Path(".nudge")) -> PostgresSettings:
        """nudge's settings for this database, its local files in ``state_dir``."""
        return PostgresSettings(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=self.dbname,
            password=self.password,
            state_dir=state_dir,
        )

    def dbt_env(self) -> dict[str, str]:
        """The environment that points dbt's ``postgres`` target at this server."""
        return {**self.settings().dbt_env(), POSTGRES_PASSWORD_VAR: self.password}

    def new_database(self, name: str) -> PostgresServer:
        """A new, empty database on this server (one per test keeps tests apart)."""
        admin = self.connect()
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute(f'create database "{name}"')
        finally:
            admin.close()
        return PostgresServer(self.host, self.port, self.user, name, self.password)

    def warehouse(self, state_dir: Path) -> PostgresConnection:
        """nudge's own connection to this database (``dagster_project/postgres.py``)."""
        return PostgresConnection(self.settings(state_dir))

    def connect(self) -> Any:
        """A psycopg2 connection to this database (a test's own, outside nudge's)."""
        import psycopg2  # dbt-postgres brings it

        con = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=self.dbname,
            password=self.password,
        )
        with con.cursor() as cur:
            cur.execute("set timezone = 'UTC'")
        con.commit()
        return con


@contextlib.contextmanager
def postgres_server(dbname: str = "nudge") -> Iterator[PostgresServer]:
    """A new cluster with one database and a trusted local user ``nudge``."""
    bindir = require_postgres()
    as_root = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="nudge-pg-"))
    data = folder / "data"

    def run(*args: str) -> None:
        command = [str(bindir / args[0]), *args[1:]]
        if as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True)

    if as_root:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    port = free_port()
    password = secrets.token_urlsafe(18)
    password_file = folder / "password"
    password_file.write_text(password + "\n")
    if as_root:
        os.chown(password_file, owner.pw_uid, owner.pw_gid)
    run(
        "initdb",
        *("-D", str(data), "-U", "nudge", "-E", "UTF8", "--no-sync"),
        *("--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"),
    )
    password_file.unlink()
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c timezone=UTC"
        " -c synchronous_commit=off -c full_page_writes=off"
    )
    run("pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
    try:
        server = PostgresServer("127.0.0.1", port, "nudge", dbname, password)
        admin = PostgresServer("127.0.0.1", port, "nudge", "postgres", password)
        con = admin.connect()
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'create database "{dbname}"')
        con.close()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
        # What nudge kept for this server's databases in the project's state folder (a run
        # with the default state folder: dbt's saved parse, the journal, the landing store).
        for path in STATE_DIR.glob(f"postgres-127.0.0.1-{port}-*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def apply_migrations(server: PostgresServer) -> list[str]:
    """Create nudge's own schema on the server from ``sql/ledger/migrations`` as they are (the
    same files ``ledger.ensure_ledger`` applies on DuckDB). Returns the files applied."""
    applied = []
    con = server.connect()
    try:
        with con.cursor() as cur:
            cur.execute((SQL_DIR / "ledger" / "migrations_table.sql").read_text())
            for path in sorted((SQL_DIR / "ledger" / "migrations").glob("*.sql")):
                cur.execute(path.read_text())
                applied.append(path.stem)
        con.commit()
    finally:
        con.close()
    return applied


def load_raw(warehouse: Path, server: PostgresServer) -> dict[str, int]:
    """The raw tables of a DuckDB warehouse file, loaded into the server (``copy_schemas``)."""
    source = duckdb.connect(str(warehouse), read_only=True)
    try:
        return copy_schemas(source, server, ("raw",))
    finally:
        source.close()


def copy_schemas(
    source: duckdb.DuckDBPyConnection, server: PostgresServer, schemas: tuple[str, ...]
) -> dict[str, int]:
    """Copy every table of ``schemas`` from a DuckDB warehouse into the server, in one
    transaction, as ``nudge demo`` loads its data (``warehouse.copy_into_postgres``): into the
    table of that name when the server has one (nudge's own, from its migrations), else into a
    new one of DuckDB's column types. Returns rows per table."""
    copied: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        con = server.warehouse(Path(folder) / "state")
        try:
            con.begin()
            for schema in schemas:
                copied.update(copy_into_postgres(source, con, schema, Path(folder)))
            con.commit()
        finally:
            con.close()
    return copied
