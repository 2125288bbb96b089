"""`nudge preview`, `nudge render` and `nudge backtest`: real dbt, real planning, no send and
no ledger write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dagster_project.backtest import _copy_raw
from dagster_project.cli import main
from dagster_project.config import ConfigError, Settings
from dagster_project.demo_data import generate_to_file
from tests.support.postgres import PostgresServer, load_raw

pytestmark = pytest.mark.dbt

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("preview and backtest") / "warehouse.duckdb"
    generate_to_file(path, customers=500, end=END)
    return path


@pytest.fixture
def warehouse(generated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # conftest clears NUDGE_* for every test, so the environment is set per test.
    monkeypatch.setenv("NUDGE_WAREHOUSE", str(generated))
    monkeypatch.setenv("NUDGE_ESP", "outbox")
    monkeypatch.setenv("NUDGE_OUTBOX_DIR", str(generated.parent / "outbox"))
    yield generated


def _query(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _ledger_is_empty(path: Path) -> bool:
    """No send recorded (a warehouse whose nudge schema was never created has none either)."""
    tables = _query(
        path,
        "select count(*) from duckdb_tables() where schema_name = 'nudge'"
        " and table_name in ('send_ledger', 'send_events')",
    )
    if tables == [(0,)]:
        return True
    return _query(path, "select count(*) from nudge.send_ledger") == [(0,)] and _query(
        path, "select count(*) from nudge.send_events"
    ) == [(0,)]


def test_preview_plans_nothing_and_matches_a_one_tick_backtest(
    warehouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["preview", "--trigger", "abandoned_cart", "--as-of", END.isoformat(), "--json"]) == 0
    )
    preview = json.loads(capsys.readouterr().out)
    planned = sum(n for key, n in preview["decisions"].items() if key.endswith(": planned"))
    assert planned > 0
    assert preview["excluded"]["reminder"]  # reasons by step
    assert preview["samples"] and all("@" not in s["to"].split("*")[0] for s in preview["samples"])
    assert _ledger_is_empty(warehouse)
    # The live tables were not touched: only the preview schemas were built.
    schemas = {r[0] for r in _query(warehouse, "select schema_name from duckdb_tables()")}
    assert "preview_audience" in schemas and "audience" not in schemas

    # abandoned_cart has the highest priority, so alone it plans what the full preview plans.
    args = ["backtest", "--from", END.isoformat(), "--to", END.isoformat()]
    assert main([*args, "--trigger", "abandoned_cart", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ticks"] == 1
    sent = sum(r["count"] for r in report["rows"] if r["outcome"] == "sent")
    assert sent == planned
    assert _ledger_is_empty(warehouse)


def test_backtest_reports_daily_volume_per_trigger_and_step(
    warehouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = END - timedelta(hours=5)
    assert main(["backtest", "--from", start.isoformat(), "--to", END.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "6 hourly ticks" in out and "nothing was sent" in out
    assert "abandoned_cart" in out and "sent per trigger:" in out
    assert _ledger_is_empty(warehouse)
    assert not list((warehouse.parent / "outbox").glob("**/*.eml"))


def test_a_second_preview_parses_only_what_changed(
    warehouse: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each preview builds in a target folder of its own, seeded with the parse the last preview
    of this warehouse saved beside it: dbt says so in its log (debug level in the file)."""
    logs = tmp_path / "dbt-logs"
    monkeypatch.setenv("DBT_LOG_PATH", str(logs))
    args = ["preview", "--trigger", "welcome", "--as-of", END.isoformat(), "--samples", "0"]
    assert main(args) == 0
    cache = warehouse.with_name(warehouse.name + ".preview.dbt-parse.msgpack")
    assert cache.is_file()
    (logs / "dbt.log").unlink()

    assert main(args) == 0
    capsys.readouterr()
    log = (logs / "dbt.log").read_text()
    assert "Partial parsing enabled" in log, log[-3000:]
    assert "Unable to do partial parsing" not in log


def test_render_writes_the_email_one_customer_would_get(
    warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["preview", "--trigger", "welcome", "--as-of", END.isoformat(), "--samples", "0"])
    capsys.readouterr()
    customer, first_name = _query(
        warehouse,
        "select customer_id, first_name from preview_audience.welcome_eligibility "
        "where step = 'day_0' and first_name is not null order by is_eligible desc limit 1",
    )[0]
    out_dir = tmp_path / "render"
    args = ["render", "--trigger", "welcome", "--step", "day_0", "--customer", customer]
    assert main([*args, "--as-of", END.isoformat(), "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "welcome/day_0" in printed and str(out_dir / "email.html") in printed
    assert first_name in (out_dir / "email.txt").read_text()
    headers = (out_dir / "headers.txt").read_text()
    assert "Subject: " in headers and "X-Nudge-Template: welcome/day_0" in headers
    # The one-click headers the real send carries, with the link the footer shows.
    unsubscribe = next(h for h in headers.splitlines() if h.startswith("List-Unsubscribe: "))
    link = unsubscribe.removeprefix("List-Unsubscribe: <").split(">")[0]
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in headers
    assert link in (out_dir / "email.txt").read_text()
    assert (out_dir / "email.html").read_text().lstrip().startswith("<!doctype html>")
    # Unknown step or customer: a clear error, exit 2.
    assert main(["render", "--trigger", "welcome", "--step", "day_99", "--customer", customer]) == 2
    assert "no step 'day_99'" in capsys.readouterr().err
    assert main([*args[:-1], "nobody", "--as-of", END.isoformat()]) == 2
    assert "has no welcome/day_0 step" in capsys.readouterr().err
    assert _ledger_is_empty(warehouse)


def test_a_replay_refuses_a_warehouse_a_tick_has_run_on(tmp_path: Path) -> None:
    """Replays drop and rebuild every model without the warehouse's lock: on a live warehouse
    they would rebuild the tables a tick sends from, so they stop before touching anything."""
    from dagster_project import ledger
    from dagster_project.config import ConfigError
    from dagster_project.policy import DispatchPolicy
    from dagster_project.providers.dryrun import DryRunProvider
    from dagster_project.replay import replay
    from dagster_project.triggers import project_triggers

    live = tmp_path / "live.duckdb"
    con = duckdb.connect(str(live))
    ledger.ensure_ledger(con)
    con.execute(
        "insert into nudge.runs (run_id, trigger, as_of, started_at, outcome)"
        " values ('r1', 'welcome', ?, ?, 'ok')",
        [datetime(2026, 6, 1, 12, tzinfo=UTC)] * 2,
    )
    con.close()
    specs, relations = project_triggers()
    with pytest.raises(ConfigError, match="a tick ran on this warehouse"):
        replay(
            live,
            [datetime(2026, 6, 1, 13, tzinfo=UTC)],
            provider=DryRunProvider(),
            specs=specs,
            relations=relations,
            policy=DispatchPolicy(),
            from_email="shop@example.com",
        )
    con = duckdb.connect(str(live), read_only=True)
    assert con.execute(
        "select count(*) from information_schema.schemata where schema_name = 'audience'"
    ).fetchall() == [(0,)]
    con.close()


def _point_at(database: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """NUDGE_WAREHOUSE at ``database``, its password in the environment, as a user sets them."""
    monkeypatch.setenv(
        "NUDGE_WAREHOUSE",
        f"postgresql://{database.user}@{database.host}:{database.port}/{database.dbname}",
    )
    monkeypatch.setenv("DBT_ENV_SECRET_NUDGE_PG_PASSWORD", database.password)


def test_a_backtest_on_postgresql_reports_what_the_same_data_in_a_duckdb_file_reports(
    warehouse: Path,
    postgres_cluster: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start = END - timedelta(hours=5)
    args = ["backtest", "--from", start.isoformat(), "--to", END.isoformat(), "--json"]
    assert main(args) == 0
    on_duckdb = json.loads(capsys.readouterr().out)
    database = postgres_cluster.new_database("backtest")
    load_raw(warehouse, database)
    _point_at(database, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    on_postgres = json.loads(capsys.readouterr().out)
    assert any(r["outcome"] == "sent" and r["count"] > 0 for r in on_postgres["rows"])
    assert on_postgres == on_duckdb
    # It read the database and wrote nothing there: no ledger, no models, only raw.
    con = database.connect()
    try:
        with con.cursor() as cur:
            cur.execute(
                "select nspname from pg_namespace"
                " where nspname not like 'pg\\_%' and nspname != 'information_schema'"
            )
            assert {row[0] for row in cur.fetchall()} == {"public", "raw"}
    finally:
        con.close()


def test_the_copy_from_postgresql_keeps_every_value_as_the_database_has_it(
    postgres_cluster: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shop's raw tables as its loader typed them (lengths, precisions, arrays, a domain, a
    materialized view), with the values a CSV hand-over gets wrong first: empty text against
    null, quotes, commas, newlines and carriage returns inside values, sub-second instants in
    another zone, dates before year 1."""
    database = postgres_cluster.new_database("backtest_values")
    con = database.connect()
    with con.cursor() as cur:
        cur.execute("create schema raw")
        cur.execute(
            "create table raw.customers (customer_id varchar(64), email text, first_name text,"
            " timezone text, birthday date, created_at timestamptz,"
            " lifetime_value numeric(12, 2), tags text[])"
        )
        cur.execute(
            "insert into raw.customers values"
            # A web form's line ends, and a value that ends in one; first, where DuckDB's
            # reader would guess the file's line ending from them.
            " ('c4', 'c@example.com', E'Ann\\r\\nMarie', E'UTC\\r', null, '2026-05-04 00:00:00+00',"
            "  null, null),"
            " ('c1', 'a@example.com', '', 'Europe/Berlin', '1990-02-28',"
            "  '2026-05-01 10:00:00.123456+02', 12.50, '{vip,\"x,y\"}'),"
            " ('c2', 'b@example.com', null, null, null, '2026-05-02 00:00:00+00', null, null),"
            " ('c,3\"', 'zoë@example.com', E'Zoë \"Z\" O''Neil,\nline two', 'UTC',"
            "  '2000-01-01', '2026-05-03 23:59:59.5-07', 0.10, '{}'),"
            # Before year 1: DuckDB's CSV reader would read "0044-03-15 BC" as 44 AD.
            " ('c_bc', 'd@example.com', null, null, '0044-03-15 BC',"
            "  '0044-03-15 10:00:00+00 BC', null, null)"
        )
        cur.execute(
            "create table raw.loaded_events (event_id text, customer_id text, event_name text,"
            " occurred_at timestamp(3) with time zone, properties jsonb)"
        )
        cur.execute(
            "insert into raw.loaded_events values"
            " ('e1', 'c1', 'product_added', '2026-05-04 08:00:00.250+00',"
            """  '{"cart_id": "k1", "items": [{"name": "Mug, \\"big\\"", "price": 12.5}],"""
            """   "note": "line one\\nline two", "empty": ""}'),"""
            " ('e2', 'c,3\"', 'order_completed', '2026-05-04 09:00:00+00', null),"
            " ('', 'c2', '', '2026-05-04 10:00:00+00', '{}')"
        )
        cur.execute("create materialized view raw.events as select * from raw.loaded_events")
        cur.execute("create domain raw.instant as timestamptz")
        cur.execute(
            "create table raw.subscriptions (customer_id text, list text, status text,"
            " changed_at raw.instant)"
        )
        cur.execute(
            "insert into raw.subscriptions values"
            " ('c1', 'marketing', 'subscribed', '2026-05-01 10:00:00+00'),"
            " ('c2', 'marketing', '', null)"
        )
        con.commit()
        expected = {}
        for table, columns in [
            (
                "customers",
                "customer_id, email, first_name, timezone, birthday, created_at,"
                " lifetime_value, tags::text",
            ),
            ("events", "event_id, customer_id, event_name, occurred_at, properties::text"),
            ("subscriptions", "customer_id, list, status, cast(changed_at as timestamptz)"),
        ]:
            cur.execute(f"select {columns} from raw.{table} where customer_id != 'c_bc'")
            expected[table] = sorted(cur.fetchall(), key=repr)
    con.close()
    _point_at(database, monkeypatch)
    scratch = tmp_path / "copy" / "backtest.duckdb"
    _copy_raw(Settings.from_env(), scratch)

    copy = duckdb.connect(str(scratch), read_only=True)
    try:
        copy.execute("set TimeZone = 'UTC'")
        for table, rows in expected.items():
            copied = sorted(
                copy.execute(f"select * from raw.{table} where customer_id != 'c_bc'").fetchall(),
                key=repr,
            )
            if table == "events":
                # jsonb's text and DuckDB's JSON may space a document differently.
                rows = [(*r[:4], r[4] and json.loads(r[4])) for r in rows]
                copied = [(*r[:4], r[4] and json.loads(r[4])) for r in copied]
            assert copied == rows, table
        types = dict(
            copy.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = 'raw' and table_name in ('customers', 'events')"
            ).fetchall()
        )
        assert types["occurred_at"] == "TIMESTAMP WITH TIME ZONE"
        assert types["properties"] == "JSON"
        assert types["lifetime_value"] == "DECIMAL(12,2)"
        assert types["birthday"] == "DATE"
        # Python has no year 0 or before: compared as DuckDB writes them.
        assert copy.execute(
            "select cast(birthday as varchar), cast(created_at as varchar) from raw.customers"
            " where customer_id = 'c_bc'"
        ).fetchall() == [("0044-03-15 (BC)", "0044-03-15 (BC) 10:00:00+00")]
        # The domain's base type.
        assert copy.execute(
            "select data_type from information_schema.columns"
            " where table_schema = 'raw' and column_name = 'changed_at'"
        ).fetchall() == [("TIMESTAMP WITH TIME ZONE",)]
        assert copy.execute("select count(*) from nudge.send_ledger").fetchall() == [(0,)]
    finally:
        copy.close()
    # The CSV files it streamed through are gone.
    assert sorted(p.name for p in scratch.parent.iterdir()) == ["backtest.duckdb"]

    # A value DuckDB's column cannot hold (numeric's NaN in a decimal): a clear error that
    # names the table and quotes none of the person's data.
    con = database.connect()
    with con.cursor() as cur:
        cur.execute(
            "insert into raw.customers (customer_id, email, lifetime_value)"
            " values ('c_nan', 'nan@example.com', 'NaN')"
        )
    con.commit()
    with pytest.raises(
        ConfigError, match=r"could not load raw\.customers of postgresql://"
    ) as error:
        _copy_raw(Settings.from_env(), scratch)
    assert "nan@example.com" not in str(error.value) and "c_nan" not in str(error.value)
    with con.cursor() as cur:
        cur.execute("delete from raw.customers where customer_id = 'c_nan'")
    con.commit()
    con.close()

    # A materialized view never refreshed cannot be read: a clear error, not a traceback.
    con = database.connect()
    with con.cursor() as cur:
        cur.execute("drop materialized view raw.events")
        cur.execute(
            "create materialized view raw.events as select * from raw.loaded_events with no data"
        )
    con.commit()
    con.close()
    with pytest.raises(
        ConfigError,
        match=r"could not copy the raw tables from postgresql://.*has not been populated",
    ):
        _copy_raw(Settings.from_env(), scratch)
    assert not list(scratch.parent.glob("*.csv"))
