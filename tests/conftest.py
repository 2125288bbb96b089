"""Shared fixtures: a real DuckDB warehouse file per test, with the ledger created."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dagster_project import ledger
from tests.support.postgres import PostgresServer, postgres_server


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer's own NUDGE_* settings or DAGSTER_HOME must not leak into tests, and no test
    writes the project's own .nudge/ folder: Dagster's runs go to a home of the test's own."""
    for name in [n for n in os.environ if n.startswith("NUDGE_")]:
        # CI's NUDGE_REQUIRE_* say what this machine must have; they are not settings.
        if not name.startswith("NUDGE_REQUIRE_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    # Link keys of the test's own: without one nudge would generate .nudge/link_secret in the
    # project (the demo's no-configuration path, tested on its own).
    monkeypatch.setenv("NUDGE_LINK_SECRET", "test-link-secret-" + "x" * 32)


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


def _duckdb_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(path))
    connection.execute("set TimeZone = 'UTC'")
    ledger.ensure_ledger(connection)
    return connection


@pytest.fixture
def con(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = _duckdb_warehouse(warehouse)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for a test file (skips without the binaries, see
    tests/support/postgres.py)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["duckdb", "postgres"])
def engine_con(request: pytest.FixtureRequest, warehouse: Path, tmp_path: Path) -> Iterator[Any]:
    """A warehouse connection with the ledger created, once per engine: a DuckDB file, then a
    new database on the file's PostgreSQL server (nudge's ``PostgresConnection``)."""
    connection: Any
    if request.param == "duckdb":
        connection = _duckdb_warehouse(warehouse)
    else:
        server: PostgresServer = request.getfixturevalue("postgres_cluster")
        name = "t_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
        connection = server.new_database(name).warehouse(tmp_path / "state")
        ledger.ensure_ledger(connection)
    yield connection
    connection.close()


# `make test` hands whole files to two workers (--dist loadfile) in collection order
# (--no-loadscope-reorder). These files take minutes each; started first, the two workers share
# them, instead of one worker starting the week (5-7 minutes) near the end while the other
# runs out of files, as xdist's default order (most tests first) did. Slowest first, as
# measured with --durations.
SLOW_FILES_FIRST = (
    "tests/test_sequence_week.py",
    "tests/defs/test_end_to_end.py",
    "tests/defs/test_tick.py",
    "tests/test_incremental_models.py",
    "tests/defs/test_demo.py",
    "tests/defs/test_feedback_end_to_end.py",
    "tests/defs/test_consent_end_to_end.py",
    "tests/defs/test_postgres_tick.py",
    "tests/test_preview_and_backtest.py",
    "tests/defs/test_transactional_end_to_end.py",
    "tests/test_privacy.py",
    "tests/test_postgres_models.py",
    "tests/defs/test_reporting_end_to_end.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FILES_FIRST)}
    # A stable sort: each file's tests keep their order (module fixtures build on it).
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
