"""Dagster's run history in a home nudge creates: the same SQLite files a stock Dagster reads,
written through connections that are opened once and reused (``dagster_storage.py``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetsDefinition, DagsterInstance, asset, materialize
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from sqlalchemy import event
from sqlalchemy.pool import Pool

from dagster_project.dagster_storage import PooledSqliteEventLogStorage
from dagster_project.tick import _EARLIER_DAGSTER_YAML, DAGSTER_YAML, dagster_instance

ASSETS = 12


def _assets() -> list[AssetsDefinition]:
    def make(i: int) -> AssetsDefinition:
        @asset(name=f"step_{i:02d}")
        def _step() -> int:
            return i

        return _step

    return [make(i) for i in range(ASSETS)]


@pytest.fixture
def connections() -> Iterator[list[str]]:
    """The file of every SQLite connection to the event log's cross-run index
    (``history/runs/index.db``) that any SQLAlchemy pool opens while the test runs."""
    opened: list[str] = []

    def record(dbapi_connection: Any, _record: Any) -> None:
        (_, _, path), *_ = dbapi_connection.execute("pragma database_list").fetchall()
        if Path(path).name == "index.db":
            opened.append(path)

    event.listen(Pool, "connect", record)
    try:
        yield opened
    finally:
        event.remove(Pool, "connect", record)


def _materialize(instance: DagsterInstance) -> str:
    result = materialize(_assets(), instance=instance)
    assert result.success
    return result.run_id


def test_a_nudge_home_keeps_its_index_open_where_stock_dagster_opens_it_per_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connections: list[str]
) -> None:
    # Another home in the environment: the instance must still keep its history in its own.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    home = tmp_path / "home"
    with dagster_instance(home) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        _materialize(instance)  # creates the run's database
        connections.clear()
        run_id = _materialize(instance)
        pooled = len(connections)
        events = len(instance.all_logs(run_id))
    assert (home / "history" / "runs" / f"{run_id}.db").exists()
    assert not (tmp_path / "elsewhere").exists()

    # The same run on stock Dagster (the default storage, a home without nudge's yaml).
    stock_home = tmp_path / "stock"
    stock_home.mkdir()
    with DagsterInstance.from_config(str(stock_home)) as stock:
        assert type(stock.event_log_storage) is SqliteEventLogStorage
        _materialize(stock)
        connections.clear()
        _materialize(stock)
        unpooled = len(connections)

    assert events > 3 * ASSETS
    assert unpooled > 2 * ASSETS, "stock Dagster opens the index for every asset event"
    assert pooled <= 1, f"the index opened {pooled} times for {events} events"


def test_stock_dagster_reads_what_a_nudge_home_wrote_and_the_other_way_round(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # A home an earlier nudge made: stock storage. Its runs stay readable after the upgrade.
    (home / "dagster.yaml").write_text(_EARLIER_DAGSTER_YAML)
    with DagsterInstance.from_config(str(home)) as earlier:
        assert type(earlier.event_log_storage) is SqliteEventLogStorage
        before = _materialize(earlier)
    with dagster_instance(home) as instance:
        assert (home / "dagster.yaml").read_text() == DAGSTER_YAML
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        after = _materialize(instance)
        seen = {r.run_id for r in instance.get_runs()}
        latest = instance.get_latest_materialization_event(_assets()[0].key)
    assert seen == {before, after}
    assert latest is not None and latest.run_id == after

    stock = SqliteEventLogStorage(str(home / "history" / "runs"))
    try:
        keys = {key.to_user_string() for key in stock.get_asset_keys()}
        assert keys == {f"step_{i:02d}" for i in range(ASSETS)}
        assert len(stock.get_logs_for_run(after)) == len(stock.get_logs_for_run(before))
    finally:
        stock.dispose()


def test_an_edited_dagster_yaml_is_left_as_its_owner_wrote_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    edited = _EARLIER_DAGSTER_YAML + "run_monitoring:\n  enabled: true\n"
    (home / "dagster.yaml").write_text(edited)
    with dagster_instance(home) as instance:
        assert type(instance.event_log_storage) is SqliteEventLogStorage
    assert (home / "dagster.yaml").read_text() == edited


def _log(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level=logging.INFO,
        user_message=message,
        run_id=run_id,
        timestamp=time.time(),
    )


def test_what_a_run_logs_after_a_wipe_is_in_its_new_file(tmp_path: Path) -> None:
    """``dagster instance wipe`` deletes the run databases: a connection kept open to one would
    go on writing to the deleted file, where nothing can read it."""
    home = tmp_path / "home"
    with dagster_instance(home) as instance:
        storage = instance.event_log_storage
        storage.store_event(_log("r1", "before the wipe"))
        instance.wipe()
        storage.store_event(_log("r1", "after the wipe"))
    stock = SqliteEventLogStorage(str(home / "history" / "runs"))
    try:
        assert [e.user_message for e in stock.get_logs_for_run("r1")] == ["after the wipe"]
    finally:
        stock.dispose()


def test_the_ui_sees_a_runs_logs_while_the_run_is_writing_them(tmp_path: Path) -> None:
    """The UI streams a run's logs by watching its file (``watch``): each write must reach
    that file while the writer is still running, not when it closes its storage."""
    base = str(tmp_path / "history" / "runs")
    writer = PooledSqliteEventLogStorage(base)
    reader = PooledSqliteEventLogStorage(base)  # the webserver's, in a process of its own
    seen: list[str] = []
    try:
        writer.store_event(_log("r1", "started"))
        reader.watch("r1", None, lambda entry, _cursor: seen.append(entry.user_message))
        for i in range(3):
            writer.store_event(_log("r1", f"step {i}"))
            deadline = time.monotonic() + 10
            while f"step {i}" not in seen and time.monotonic() < deadline:
                time.sleep(0.05)
            assert f"step {i}" in seen, f"the watcher saw {seen} while the run wrote step {i}"
    finally:
        reader.dispose()
        writer.dispose()
