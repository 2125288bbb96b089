"""Shared fixtures: a real DuckDB warehouse file per test, with the ledger created."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dagster_project import ledger


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


@pytest.fixture
def con(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(warehouse))
    connection.execute("set TimeZone = 'UTC'")
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
    "tests/defs/test_feedback_end_to_end.py",
    "tests/defs/test_consent_end_to_end.py",
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
