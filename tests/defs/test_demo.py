"""``nudge demo`` end to end, on both engines: a generated warehouse, real dbt builds, real
Dagster runs into the outbox, the provider's reports through ``nudge serve``'s real webhook,
the shoppers' orders, and the reporting models. On PostgreSQL (a real server) the same demo
must send exactly what it sends on DuckDB."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.cli import main
from dagster_project.config import POSTGRES_PASSWORD_VAR, ConfigError, Settings
from dagster_project.demo import prepare_demo_warehouse
from dagster_project.demo_data import generate_demo_warehouse
from dagster_project.demo_shoppers import shoppers_respond
from dagster_project.postgres import PostgresConnection
from dagster_project.triggers import project_triggers
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.dbt

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# The demo's ticks: the hour before END, and END.
TICKS = (END - timedelta(hours=1), END)
ARGS = ["demo", "--customers", "400", "--hours", "2", "--every", "1", "--end", END.isoformat()]
# What the two engines must agree on after the same demo.
LEDGER = "select send_id, trigger, step, status, reason from nudge.send_ledger order by send_id"
EVENTS = "select count(*), count(distinct event_id), max(occurred_at) from raw.events"
# The shoppers' orders (demo_shoppers.py): ids, times, baskets and revenue.
ORDERS = (
    "select event_id, customer_id, occurred_at, properties from raw.events"
    " where event_id like 'demo-order:%'"
)
REPORTED = "select sum(sent) from reporting.rpt_trigger_daily"


Query = Callable[[str], list[tuple]]


@dataclass(frozen=True)
class Demo:
    out: str  # what `nudge demo` printed
    outbox: Path
    ledger: list[tuple]
    events: tuple
    reported_sent: int
    orders: list[tuple]
    settings: Settings
    read: Query


def _run_demo(tmp: Path, env: dict[str, str], read: Query) -> Demo:
    """``nudge demo`` with ``env``; ``query(sql)`` reads the warehouse it made afterwards."""
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUDGE_OUTBOX_DIR", str(tmp / "outbox"))
        mp.setenv("NUDGE_LANDING", str(tmp / "landing.sqlite"))
        for name, value in env.items():
            mp.setenv(name, value)
        with contextlib.redirect_stdout(printed):
            assert main(ARGS) == 0, printed.getvalue()[-3000:]
    return Demo(
        printed.getvalue(),
        tmp / "outbox",
        [tuple(row) for row in read(LEDGER)],
        tuple(read(EVENTS)[0]),
        int(read(REPORTED)[0][0] or 0),
        sorted(tuple(row) for row in read(ORDERS)),
        Settings.from_env(env),
        read,
    )


def _sent_per_trigger(out: str) -> dict[str, int]:
    """The demo's summary table: sends per trigger over all its ticks."""
    table = out[out.index("trigger ") :].splitlines()
    sent_column = table[0].split().index("sent")
    return {
        line.split()[0]: int(line.split()[sent_column])
        for line in table[2 : 2 + len(project_triggers()[0])]
    }


def _assert_a_complete_demo(demo: Demo) -> Path:
    """What a newcomer sees: every trigger in the summary, the outbox holding what it says was
    sent, the sequences' progress, the reporting models built and the report written. Returns
    the report's path."""
    reported = _sent_per_trigger(demo.out)
    assert set(reported) == {s.name for s in project_triggers()[0]}
    for trigger, count in reported.items():
        assert len(list((demo.outbox / trigger).glob("*.eml"))) == count
    assert sum(reported.values()) > 0
    assert (demo.outbox / "index.html").exists()
    assert "--allow-late" in demo.out
    assert "Sequence progress" in demo.out and "abandoned_cart/reminder" in demo.out
    assert "The provider's reports, posted to nudge serve's webhook" in demo.out
    assert "delivered" in demo.out
    assert demo.reported_sent == sum(reported.values())
    assert sum(1 for row in demo.ledger if row[3] == "sent") == sum(reported.values())
    _assert_the_timelines_are_the_ledgers(demo)
    report = demo.out[demo.out.index("What the emails earned") :].split("file://")[1].split()[0]
    assert Path(report).is_file()
    return Path(report)


def _timelines(out: str) -> list[str]:
    """The demo's example timelines: ``trigger key: step Dow HH:MM -> step ... (UTC)``."""
    section = out[out.index(" entries received two or more steps") :].split("\n\n")[0]
    return [line.strip() for line in section.splitlines()[1:] if line.startswith("  ")]


def _assert_the_timelines_are_the_ledgers(demo: Demo) -> None:
    """Each example's steps, in order, at the instants the ledger sent them (UTC)."""
    entries = demo.read(
        "select trigger, trigger_key, count(*) from nudge.send_ledger where status = 'sent'"
        " group by trigger, trigger_key having count(*) >= 2"
    )
    assert f"\n{len(entries)} entries received two or more steps" in demo.out
    examples = _timelines(demo.out)
    assert len(examples) == min(4, len(entries))
    for line in examples:
        entry, sends = line.removesuffix(" (UTC)").split(": ", 1)
        trigger, key = entry.split(" ", 1)
        rows = demo.read(
            "select step, sent_as_of from nudge.send_ledger where status = 'sent'"
            f" and trigger = '{trigger}' and trigger_key = '{key.replace(chr(39), chr(39) * 2)}'"
            " order by step_index"
        )
        assert sends.split(" -> ") == [f"{step} {at.astimezone(UTC):%a %H:%M}" for step, at in rows]


@pytest.fixture(scope="module")
def duckdb_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    tmp = tmp_path_factory.mktemp("demo-duckdb")
    warehouse = tmp / "demo.duckdb"

    def query(statement: str) -> list[tuple]:
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            return con.execute(statement).fetchall()
        finally:
            con.close()

    return _run_demo(tmp, {"NUDGE_WAREHOUSE": str(warehouse)}, query)


def test_the_demo_reports_what_its_outbox_holds(duckdb_demo: Demo, tmp_path: Path) -> None:
    report = _assert_a_complete_demo(duckdb_demo)
    # Beside the warehouse file, where the demo says.
    assert report.parent == duckdb_demo.outbox.parent / "reports"


def test_the_demo_never_overwrites_a_duckdb_warehouse_holding_someones_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NUDGE_WAREHOUSE", str(tmp_path / "mine.duckdb"))
    mine = duckdb.connect(str(tmp_path / "mine.duckdb"))
    mine.execute("create schema raw; create table raw.customers (customer_id varchar)")
    mine.close()
    assert main(ARGS) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    mine = duckdb.connect(str(tmp_path / "mine.duckdb"), read_only=True)
    try:
        assert mine.execute("select count(*) from raw.customers").fetchall() == [(0,)]
    finally:
        mine.close()


def _url(database: PostgresServer) -> str:
    return f"postgresql://{database.user}@{database.host}:{database.port}/{database.dbname}"


def _query(database: PostgresServer) -> Query:
    def query(statement: str) -> list[tuple]:
        con = database.connect()
        try:
            with con.cursor() as cur:
                cur.execute(statement)
                return [tuple(row) for row in cur.fetchall()]
        finally:
            con.close()

    return query


def test_the_demo_runs_on_postgresql_and_sends_what_it_sends_on_duckdb(
    postgres_cluster: PostgresServer, duckdb_demo: Demo, tmp_path: Path
) -> None:
    """Found by a user: `nudge demo` refused a PostgreSQL warehouse, so trying nudge on the
    engine a shop's events live in meant loading data by hand first."""
    database = postgres_cluster.new_database("demo")
    env = {"NUDGE_WAREHOUSE": _url(database), POSTGRES_PASSWORD_VAR: database.password}
    demo = _run_demo(tmp_path, env, _query(database))
    report = _assert_a_complete_demo(demo)
    report.unlink()  # in the project's state folder, as `nudge report`'s on PostgreSQL
    assert f"demo warehouse {_url(database)}: 400 customers" in demo.out
    # The same sends, holdouts, skips and reasons; the same events, the shoppers' orders too.
    assert demo.ledger == duckdb_demo.ledger
    assert demo.events == duckdb_demo.events
    assert demo.orders == duckdb_demo.orders
    # The demo's two hours are too short for its shoppers' orders (they come 30 minutes to a
    # day and a half after an email): the first tick's shoppers, given three days, order the
    # same baskets at the same times on both engines.
    for engine in (demo, duckdb_demo):
        placed = shoppers_respond(engine.settings, TICKS[0], TICKS[0] + timedelta(days=3))
        assert placed.placed > 0
    orders = [sorted(engine.read(ORDERS)) for engine in (demo, duckdb_demo)]
    assert orders[0] == orders[1] and len(orders[0]) == placed.placed
    assert demo.reported_sent == duckdb_demo.reported_sent
    assert _sent_per_trigger(demo.out) == _sent_per_trigger(duckdb_demo.out)
    assert _timelines(demo.out) == _timelines(duckdb_demo.out)


def _counts(database: PostgresServer) -> dict[str, int]:
    read = _query(database)
    return {
        table: int(read(f"select count(*) from raw.{table}")[0][0])
        for table in ("customers", "events", "subscriptions")
    }


def _settings(database: PostgresServer) -> Settings:
    return Settings.from_env(
        {"NUDGE_WAREHOUSE": _url(database), POSTGRES_PASSWORD_VAR: database.password}
    )


def _execute(database: PostgresServer, *statements: str) -> None:
    con = database.connect()
    try:
        with con.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        con.commit()
    finally:
        con.close()


def test_the_postgresql_demo_never_drops_a_database_holding_someones_data(
    postgres_cluster: PostgresServer,
) -> None:
    # A shop's raw tables; and, found in review, a database without raw tables whose own
    # `reporting` schema (one the demo's dbt builds) the demo dropped, with a view on it.
    shop = postgres_cluster.new_database("shop")
    _execute(
        shop,
        "create schema raw",
        "create table raw.customers (customer_id text)",
        "insert into raw.customers values ('c-1')",
    )
    bi = postgres_cluster.new_database("bi")
    _execute(
        bi,
        "create schema reporting",
        "create table reporting.revenue (day date, amount numeric)",
        "insert into reporting.revenue values ('2026-06-01', 10)",
        "create view public.revenue_view as select * from reporting.revenue",
    )
    for database, kept in (
        (shop, "select customer_id from raw.customers"),
        (bi, "select amount::int from public.revenue_view"),
    ):
        with pytest.raises(ConfigError, match="refusing to overwrite"):
            prepare_demo_warehouse(_settings(database), customers=50, end=END, seed=7)
        assert len(_query(database)(kept)) == 1
    # A database nudge only initialised (an empty ledger) is the demo's to fill.
    fresh = postgres_cluster.new_database("fresh")
    con = fresh.warehouse(Path(tempfile.mkdtemp()))
    try:
        ledger.ensure_ledger(con)
    finally:
        con.close()
    prepare_demo_warehouse(_settings(fresh), customers=30, end=END, seed=7)
    assert _counts(fresh)["customers"] == 30


def test_the_postgresql_demo_replaces_its_own_database_all_or_nothing(
    postgres_cluster: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = postgres_cluster.new_database("again")
    prepare_demo_warehouse(_settings(demo), customers=60, end=END, seed=7)
    expected = duckdb.connect()
    try:
        generated = generate_demo_warehouse(expected, customers=60, end=END, seed=7)
        rows = {
            table: expected.execute(f"select * from raw.{table}").fetchall()
            for table in ("customers", "subscriptions")
        }
    finally:
        expected.close()
    assert _counts(demo) == {t: generated[t] for t in ("customers", "events", "subscriptions")}
    # Row for row, nulls and empty strings apart (the demo plants both).
    read = _query(demo)
    for table, wanted in rows.items():
        assert sorted(read(f"select * from raw.{table}"), key=_text) == sorted(wanted, key=_text)

    # The next demo replaces it, with the models dbt built from the last one.
    _execute(demo, "create schema intermediate", "create table intermediate.left_over (x int)")
    prepare_demo_warehouse(_settings(demo), customers=40, end=END, seed=7)
    assert _counts(demo)["customers"] == 40
    assert read("select to_regclass('intermediate.left_over')") == [(None,)]
    assert read("select count(*) from nudge.nudge_demo") == [(1,)]

    # A load that breaks half way (the second table's COPY) leaves the last demo as it was.
    copy_in = PostgresConnection.copy_in
    calls: list[str] = []

    def broken(self: PostgresConnection, statement: str, handle: BinaryIO) -> int:
        calls.append(statement)
        if len(calls) == 2:
            raise RuntimeError("the connection dropped")
        return copy_in(self, statement, handle)

    monkeypatch.setattr(PostgresConnection, "copy_in", broken)
    with pytest.raises(RuntimeError, match="dropped"):
        prepare_demo_warehouse(_settings(demo), customers=70, end=END, seed=7)
    monkeypatch.undo()
    assert _counts(demo)["customers"] == 40
    assert read("select count(*) from nudge.nudge_demo") == [(1,)]

    # Found in review: a demo that failed after loading (the ledger's migrations) left a
    # database without the marker, which every later demo refused.
    monkeypatch.setattr("dagster_project.demo.ledger.ensure_ledger", broken_ledger)
    with pytest.raises(RuntimeError, match="migration"):
        prepare_demo_warehouse(_settings(demo), customers=20, end=END, seed=7)
    monkeypatch.undo()
    prepare_demo_warehouse(_settings(demo), customers=25, end=END, seed=7)
    assert _counts(demo)["customers"] == 25
    assert read("select count(*) from nudge.send_ledger") == [(0,)]


def _text(row: tuple) -> list[str]:
    return [str(value) for value in row]


def broken_ledger(con: object) -> list[str]:
    raise RuntimeError("a migration failed")
