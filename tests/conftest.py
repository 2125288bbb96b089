"""Shared fixtures: a real DuckDB warehouse file per test, with the ledger created."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dagster_project import ledger


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
