"""The dbt project on PostgreSQL: every model, data test and unit test, and the same tables.

A demo warehouse is generated, one real tick (``nudge run``) sends its emails on DuckDB, and
the shop's raw tables and nudge's own (the ledger, provider events, consent changes) are
copied into a real PostgreSQL server. Then the same models are built on both engines at the
same instants, an hour apart (the second build incremental), and every table compared row by
row: the dialect macros (dbt/macros/dialect.sql) must compute exactly what DuckDB computes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dagster_project.config import DBT_PROJECT_DIR, SQL_DIR
from dagster_project.dbt_runner import dbt_executable
from dagster_project.demo_data import generate_to_file
from tests.support.postgres import (
    PostgresServer,
    apply_migrations,
    copy_schemas,
    postgres_server,
)
from tests.support.processes import nudge

pytestmark = pytest.mark.dbt

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
NEXT_HOUR = AS_OF + timedelta(hours=1)
SCHEMAS = ("staging", "intermediate", "triggers", "audience", "reporting")
# Columns that differ by design: when the row was loaded (wall clock).
WALL_CLOCK_COLUMNS = {"loaded_at"}


# Values the dialects read differently unless nudge_try_cast evens them out: a quantity of
# "2.0" is 2, a price of "NaN" is no price (PostgreSQL's numeric would take it), "1e1" is 10,
# " 7.5 " is 7.5, and a quantity of "1.6" rounds to 2.
EDGE_EVENTS = [
    (
        "edge-1",
        "cus_0000003",
        "product_added",
        AS_OF - timedelta(hours=3),
        json.dumps({"cart_id": "edge-cart", "product_id": "e1", "price": "30", "quantity": "2.0"}),
    ),
    (
        "edge-2",
        "cus_0000003",
        "product_added",
        AS_OF - timedelta(hours=3, minutes=-1),
        json.dumps({"cart_id": "edge-cart", "product_id": "e2", "name": "Bowl", "price": "NaN"}),
    ),
    (
        "edge-3",
        "cus_0000004",
        "order_completed",
        AS_OF - timedelta(hours=5),
        json.dumps(
            {
                "order_id": "edge-order",
                "revenue": "1e1",
                "products": [
                    {"product_id": "e3", "price": "1e1", "quantity": "2.0"},
                    {"product_id": "e4", "price": " 7.5 ", "quantity": "1.6"},
                ],
            }
        ),
    ),
]


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "DAGSTER_"))}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env.update(extra)
    return env


def _dbt(args: list[str], env: dict[str, str], target_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            dbt_executable(),
            *args,
            *("--target-path", str(target_path), "--log-path", str(target_path / "logs")),
        ],
        cwd=DBT_PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def engines(server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both engines built at AS_OF, and the PostgreSQL build's whole `dbt build` output."""
    folder = tmp_path_factory.mktemp("postgres")
    warehouse = folder / "warehouse.duckdb"
    generate_to_file(warehouse, customers=300, end=AS_OF)
    with duckdb.connect(str(warehouse)) as con:
        con.executemany("insert into raw.events values (?, ?, ?, ?, ?)", EDGE_EVENTS)
    # A real tick, so the ledger, the reporting models and already_sent have rows to compare.
    tick = nudge(
        "run",
        "--as-of",
        AS_OF.isoformat(),
        "--allow-late",
        env=_env(
            NUDGE_WAREHOUSE=str(warehouse),
            NUDGE_OUTBOX_DIR=str(folder / "outbox"),
            NUDGE_LINK_SECRET="postgres-test-link-secret-" + "x" * 32,
            DAGSTER_HOME=str(folder / "dagster_home"),
        ),
    )
    out, err = tick.communicate(timeout=600)
    assert tick.returncode == 0, out + err

    # nudge's own schema from its migrations, as they are: the same DDL on both engines.
    migrations = apply_migrations(server)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        copied = copy_schemas(con, server, ("raw", "nudge"))

    duck_env = _env(NUDGE_WAREHOUSE=str(warehouse), NUDGE_AS_OF=AS_OF.isoformat())
    pg_env = _env(**server.dbt_env(), NUDGE_AS_OF=AS_OF.isoformat())
    # The tick's sends changed the ledger after its own build: both engines rebuild from the
    # same state. PostgreSQL runs the whole `dbt build`, data and unit tests included.
    duck = _dbt(["run", "--full-refresh"], duck_env, folder / "target_duckdb")
    assert duck.returncode == 0, duck.stdout[-3000:]
    pg = _dbt(["build"], pg_env, folder / "target_postgres")
    return {
        "warehouse": warehouse,
        "copied": copied,
        "migrations": migrations,
        "pg_build": pg,
        "duck_env": duck_env,
        "pg_env": pg_env,
        "folder": folder,
        "run_results": json.loads((folder / "target_postgres" / "run_results.json").read_text()),
    }


def test_dbt_build_passes_on_postgresql_with_its_data_and_unit_tests(
    engines: dict[str, Any],
) -> None:
    build = engines["pg_build"]
    assert build.returncode == 0, build.stdout[-5000:]
    results = engines["run_results"]["results"]
    kinds = {}
    for result in results:
        kind = result["unique_id"].split(".")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
        # Exposures (the BI dashboards) have nothing to run: no-op.
        assert result["status"] in ("success", "pass", "no-op"), result["unique_id"]
    # Every model, and the tests: not a build that selected nothing.
    assert kinds["model"] == len(list(Path(DBT_PROJECT_DIR.parent, "models").rglob("*.sql")))
    assert kinds["unit_test"] >= 40
    assert kinds["test"] >= 100


def _normalize(value: Any) -> Any:
    """One spelling of a value on both engines: DuckDB gives lists of structs and decimals,
    PostgreSQL's jsonb gives lists of dicts with floats; both give aware datetimes."""
    if isinstance(value, Decimal):
        return round(float(value), 6)
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return _normalize(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, dict):
        return tuple(sorted((k, _normalize(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_normalize(v) for v in value)
    return value


def _tables(con: Any, schema: str, *, duck: bool) -> dict[str, list[str]]:
    query = (
        "select table_name, column_name from information_schema.columns"
        f" where table_schema = '{schema}' order by table_name, ordinal_position"
    )
    rows = con.execute(query).fetchall() if duck else _pg_rows(con, query)
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    return tables


def _pg_rows(con: Any, query: str) -> list[tuple[Any, ...]]:
    with con.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


def _differences(warehouse: Path, server: PostgresServer) -> tuple[list[str], int]:
    """Every table that differs between the engines (columns or rows), and rows compared."""
    differences: list[str] = []
    compared = 0
    pg = server.connect()
    try:
        with duckdb.connect(str(warehouse), read_only=True) as duck:
            duck.execute("set TimeZone = 'UTC'")
            for schema in SCHEMAS:
                duck_tables = _tables(duck, schema, duck=True)
                pg_tables = _tables(pg, schema, duck=False)
                assert duck_tables, schema
                for table, columns in duck_tables.items():
                    if set(columns) != set(pg_tables.get(table, [])):
                        differences.append(
                            f"{schema}.{table}: columns {columns} vs {pg_tables.get(table)}"
                        )
                        continue
                    names = [c for c in columns if c not in WALL_CLOCK_COLUMNS]
                    select = ", ".join(f'"{c}"' for c in names)
                    query = f'select {select} from "{schema}"."{table}"'
                    duck_rows = sorted(
                        (_normalize(r) for r in duck.execute(query).fetchall()), key=repr
                    )
                    pg_rows = sorted((_normalize(r) for r in _pg_rows(pg, query)), key=repr)
                    compared += len(duck_rows)
                    if duck_rows != pg_rows:
                        only_duck = [r for r in duck_rows if r not in pg_rows][:2]
                        only_pg = [r for r in pg_rows if r not in duck_rows][:2]
                        differences.append(
                            f"{schema}.{table}: {len(duck_rows)} vs {len(pg_rows)} rows;"
                            f" DuckDB only {only_duck}; PostgreSQL only {only_pg}"
                        )
    finally:
        pg.close()
    return differences, compared


def test_nudges_schema_migrations_run_on_postgresql_and_again_change_nothing(
    engines: dict[str, Any], server: PostgresServer
) -> None:
    assert engines["migrations"][0].startswith("001_")
    assert len(engines["migrations"]) == len(
        list((SQL_DIR / "ledger" / "migrations").glob("*.sql"))
    )
    con = server.connect()
    try:
        before = _pg_rows(con, "select count(*), count(distinct send_id) from nudge.send_ledger")
        [(salt,)] = _pg_rows(con, "select salt from nudge.erasure_salt")
    finally:
        con.close()
    apply_migrations(server)  # every migration is idempotent, as on DuckDB
    con = server.connect()
    try:
        assert (
            _pg_rows(con, "select count(*), count(distinct send_id) from nudge.send_ledger")
            == before
        )
        assert _pg_rows(con, "select salt from nudge.erasure_salt") == [(salt,)]
    finally:
        con.close()
    assert before[0][0] > 0


def test_every_model_computes_the_same_rows_on_both_engines(
    engines: dict[str, Any], server: PostgresServer
) -> None:
    assert engines["pg_build"].returncode == 0, engines["pg_build"].stdout[-3000:]
    differences, compared = _differences(engines["warehouse"], server)
    assert not differences, "\n".join(differences)
    assert compared > 1000


def test_the_comparison_has_sends_exclusions_and_records_to_compare(
    engines: dict[str, Any], server: PostgresServer
) -> None:
    """The demo data reaches the parts of the engine the dialect macros touch: sends in the
    ledger and reporting, eligible and excluded steps, cart items as records, step lists."""
    assert engines["copied"]["nudge.send_ledger"] > 0
    pg = server.connect()
    try:
        [(sends,)] = _pg_rows(pg, "select count(*) from reporting.fct_sends")
        [(eligible, excluded, with_items)] = _pg_rows(
            pg,
            "select count(*) filter (where is_eligible), count(*) filter (where not is_eligible),"
            " count(*) filter (where jsonb_array_length(items) > 0)"
            " from audience.abandoned_cart_eligibility",
        )
        [(reasons,)] = _pg_rows(
            pg,
            "select count(distinct exclusion_reason) from audience.abandoned_cart_eligibility",
        )
    finally:
        pg.close()
    assert sends > 0
    assert eligible > 0 and excluded > 0 and with_items > 0
    assert reasons >= 2
    # The edge values, as DuckDB reads them (and the comparison above says both agree).
    con = server.connect()
    try:
        assert _pg_rows(
            con,
            "select item_count, cart_value, invalid_item_count"
            " from intermediate.int_carts__summarized where cart_id = 'edge-cart'",
        ) == [(2, Decimal("60.00"), 1)]
        assert _pg_rows(
            con,
            "select revenue, item_count from intermediate.int_orders__itemized"
            " where order_id = 'edge-order'",
        ) == [(Decimal("10.00"), 4)]
    finally:
        con.close()


def test_an_incremental_build_an_hour_later_still_matches(
    engines: dict[str, Any], server: PostgresServer
) -> None:
    """The incremental models (delete+insert on both engines) extend what the first build
    kept, at the next tick's instant."""
    folder: Path = engines["folder"]
    # The next hour's events, as the shop's pipeline delivers them to both warehouses: a new
    # cart, and an order placed before the last tick that arrives late.
    new_events = [
        (
            "pg-e1",
            "cus_0000001",
            "product_added",
            NEXT_HOUR - timedelta(minutes=30),
            json.dumps({"cart_id": "pg-cart", "product_id": "p-new", "price": 30}),
        ),
        (
            "pg-e2",
            "cus_0000002",
            "order_completed",
            AS_OF - timedelta(hours=2),
            json.dumps({"order_id": "pg-order", "revenue": 12.5, "products": [{"price": 12.5}]}),
        ),
    ]
    with duckdb.connect(str(engines["warehouse"])) as duck:
        duck.executemany("insert into raw.events values (?, ?, ?, ?, ?)", new_events)
    con = server.connect()
    try:
        with con.cursor() as cur:
            cur.executemany("insert into raw.events values (%s, %s, %s, %s, %s)", new_events)
        con.commit()
    finally:
        con.close()
    duck_env = {**engines["duck_env"], "NUDGE_AS_OF": NEXT_HOUR.isoformat()}
    pg_env = {**engines["pg_env"], "NUDGE_AS_OF": NEXT_HOUR.isoformat()}
    duck = _dbt(["run"], duck_env, folder / "target_duckdb")
    assert duck.returncode == 0, duck.stdout[-3000:]
    pg = _dbt(["run"], pg_env, folder / "target_postgres")
    assert pg.returncode == 0, pg.stdout[-3000:]
    # Incremental, not rebuilt: the events loaded by the first build keep its instant.
    con = server.connect()
    try:
        [(kept, loaded)] = _pg_rows(
            con,
            "select count(*) filter (where loaded_as_of = '" + AS_OF.isoformat() + "'),"
            " max(loaded_as_of) from staging.base_raw__events",
        )
    finally:
        con.close()
    assert kept > 0
    assert loaded == NEXT_HOUR
    differences, _ = _differences(engines["warehouse"], server)
    assert not differences, "\n".join(differences)


def test_the_password_reaches_dbt_only_from_the_environment_and_never_its_logs(
    engines: dict[str, Any], server: PostgresServer
) -> None:
    """The server takes SCRAM passwords over TCP: the builds above used the one in
    DBT_ENV_SECRET_NUDGE_PG_PASSWORD, and neither it nor a wrong one shows in dbt's output or
    its log file."""
    folder: Path = engines["folder"]
    logs = (folder / "target_postgres" / "logs" / "dbt.log").read_text()
    assert server.password not in engines["pg_build"].stdout + logs
    wrong = "wrong-" + server.password[::-1]
    env = {**engines["pg_env"], "DBT_ENV_SECRET_NUDGE_PG_PASSWORD": wrong}
    failed = _dbt(["run", "--select", "stg_raw__subscriptions"], env, folder / "target_wrong")
    output = (
        failed.stdout + failed.stderr + (folder / "target_wrong" / "logs" / "dbt.log").read_text()
    )
    assert failed.returncode != 0
    assert "password authentication failed" in output
    assert wrong not in output and server.password not in output


def test_a_session_outside_utc_fails_before_any_model_with_the_fix(
    engines: dict[str, Any], server: PostgresServer
) -> None:
    """Dates and hours follow PostgreSQL's session time zone: a role set to New York would
    shift every day boundary, so dbt stops at on-run-start and says how to fix it."""
    con = server.connect()
    try:
        with con.cursor() as cur:
            cur.execute("create role new_york login password 'ny-secret-password'")
            cur.execute("alter role new_york set timezone = 'America/New_York'")
            cur.execute("grant all on database nudge to new_york")
        con.commit()
    finally:
        con.close()
    folder: Path = engines["folder"]
    env = {
        **engines["pg_env"],
        "NUDGE_PG_USER": "new_york",
        "DBT_ENV_SECRET_NUDGE_PG_PASSWORD": "ny-secret-password",
    }
    failed = _dbt(["run", "--select", "stg_raw__subscriptions"], env, folder / "target_ny")
    assert failed.returncode != 0
    assert "nudge needs the session time zone UTC, not America/New_York" in failed.stdout
    assert "alter role new_york set timezone = 'UTC'" in failed.stdout
