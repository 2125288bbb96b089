"""nudge's PostgreSQL connection speaks DuckDB's calls (dagster_project/postgres.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from dagster_project.config import Settings, postgres_from_url
from dagster_project.postgres import AdvisoryLockTimeout, duckdb_type, to_pyformat
from dagster_project.warehouse import (
    MissingInputError,
    check_input_contract,
    copy_into_postgres,
    locked_warehouse,
)


def test_placeholders_become_psycopg2s_outside_quotes_and_every_percent_is_doubled() -> None:
    statement = (
        "select $a, ?, '$b ? 50%' as text, \"col$x\" -- 80 % of $c\n"
        "from t where x like '%' || $a /* $d ? */"
    )
    assert to_pyformat(statement, {"a": 1}) == (
        "select %(a)s, %s, '$b ? 50%%' as text, \"col$x\" -- 80 %% of $c\n"
        "from t where x like '%%' || %(a)s /* $d ? */"
    )
    # Without parameters psycopg2 reads nothing: the statement goes as it is.
    assert to_pyformat("select '50%'", None) == "select '50%'"


@pytest.mark.parametrize(
    "statement",
    [
        "select 1 -- 80 % of the rows\n, $a",
        "select '%' || $a",
        'select $a as "50%"',
    ],
)
def test_a_percent_anywhere_runs_with_parameters_on_both_engines(
    engine_con: Any, statement: str
) -> None:
    assert engine_con.execute(statement, {"a": "x"}).fetchall()[0][-1] in ("x", "%x")


def test_inserts_updates_and_deletes_answer_how_many_rows_they_changed(engine_con: Any) -> None:
    con = engine_con
    con.execute("create table nudge.scratch (k varchar, v integer)")
    assert con.execute("insert into nudge.scratch values ('a', 1), ('b', 2)").fetchall() == [(2,)]
    assert con.execute("update nudge.scratch set v = v + 1 where v > $n", {"n": 0}).fetchone() == (
        2,
    )
    assert con.execute("delete from nudge.scratch where k = ?", ["a"]).fetchall() == [(1,)]
    assert con.execute("update nudge.scratch set v = 0 where k = 'z'").fetchall() == [(0,)]


def test_a_registered_frame_is_a_relation_and_nested_values_stay_json(engine_con: Any) -> None:
    frame = pa.table(
        {
            "k": ["a", "b"],
            "n": [1, None],
            "items": [[{"name": "Mug", "price": 12.5}], []],
        }
    )
    engine_con.register("frame", frame)
    try:
        rows = engine_con.execute("select k, n from frame order by k").fetchall()
        assert rows == [("a", 1), ("b", None)]
        # Each engine reads the JSON its own way; the value is the same.
        (name,) = engine_con.execute(
            "select json_extract_string(to_json(items), '$[0].name') from frame where k = 'a'"
            if not hasattr(engine_con, "settings")
            else "select items -> 0 ->> 'name' from frame where k = 'a'"
        ).fetchall()[0]
        assert name == "Mug"
    finally:
        engine_con.unregister("frame")


def test_an_ipv6_host_survives_the_round_trip_through_its_url() -> None:
    settings = postgres_from_url("postgresql://nudge@[::1]:5433/shop")
    assert settings is not None and settings.host == "::1"
    again = postgres_from_url(settings.url)
    assert again is not None and again.same_database(settings)


def test_the_lock_is_held_by_the_working_session_and_keeps_others_out(
    postgres_cluster: Any, tmp_path: Path
) -> None:
    database = postgres_cluster.new_database("locks")
    url = f"postgresql://{database.user}@{database.host}:{database.port}/{database.dbname}"
    settings = Settings.from_env(
        {"NUDGE_WAREHOUSE": url, "DBT_ENV_SECRET_NUDGE_PG_PASSWORD": database.password}
    )
    with locked_warehouse(settings) as con:
        # The session that works holds the lock: if it goes, the work stops with it.
        (holders,) = con.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and granted"
            " and pid = pg_backend_pid()"
        ).fetchone()
        assert holders == 1
        with (
            pytest.raises(AdvisoryLockTimeout, match="locked by another nudge run"),
            locked_warehouse(settings, timeout=0.3),
        ):
            pass
        assert database.password not in repr(settings)
    # Released on the way out: the next one gets it at once.
    with locked_warehouse(settings, timeout=0.3) as con:
        assert con.execute("select 1").fetchall() == [(1,)]


def test_the_input_contract_accepts_raw_tables_views_and_materialized_views(
    engine_con: Any,
) -> None:
    """A shop's raw schema is often views over what its loader writes, and on PostgreSQL often
    materialized views: dbt reads all of them as sources, so the contract check must too."""
    con = engine_con
    postgres = hasattr(con, "settings")
    con.execute("create schema if not exists raw")
    con.execute("create table raw.loaded_events (event_id varchar, customer_id varchar)")
    con.execute("create table raw.customers (customer_id varchar, email varchar)")
    con.execute("create view raw.subscriptions as select 'c1' as customer_id")
    with pytest.raises(MissingInputError, match=r"has no raw\.events\."):
        check_input_contract(con, "the shop")
    # DuckDB has no materialized views: a view stands in for one there.
    kind = "materialized view" if postgres else "view"
    con.execute(f"create {kind} raw.events as select * from raw.loaded_events")
    check_input_contract(con, "the shop")


@pytest.mark.parametrize(
    ("postgres_type", "duckdb"),
    [
        ("text", "varchar"),
        ("character varying(64)", "varchar"),
        ("timestamp(3) with time zone", "timestamptz"),
        ("timestamp without time zone", "timestamp"),
        ("jsonb", "json"),
        ("numeric(12,2)", "decimal(12, 2)"),
        # Beyond DuckDB's 38 digits, and PostgreSQL's unbounded numeric: a double holds them.
        ("numeric(50,2)", "double"),
        ("numeric", "double"),
        ("double precision", "double"),
        # A type DuckDB does not share is copied as the text PostgreSQL writes for it.
        ("text[]", "varchar"),
        ("interval", "varchar"),
    ],
)
def test_a_postgresql_column_type_becomes_the_duckdb_type_that_holds_its_values(
    postgres_type: str, duckdb: str
) -> None:
    assert duckdb_type(postgres_type) == duckdb


def test_a_snapshot_sees_one_instant_of_the_database_and_writes_nothing(
    postgres_cluster: Any, tmp_path: Path
) -> None:
    """What a backtest's copy relies on: the three raw tables, read one after another in a
    snapshot, agree even while a loader commits between the reads."""
    database = postgres_cluster.new_database("snapshot")
    reader = database.warehouse(tmp_path / "state")
    loader = database.warehouse(tmp_path / "state")
    try:
        loader.execute("create table public.events (n integer)")
        loader.execute("insert into public.events values (1)")
        reader.begin_snapshot()
        assert reader.execute("select count(*) from public.events").fetchall() == [(1,)]
        loader.execute("insert into public.events values (2)")
        assert reader.execute("select count(*) from public.events").fetchall() == [(1,)]
        with pytest.raises(Exception, match="read-only transaction"):
            reader.execute("insert into public.events values (3)")
        reader.rollback()
        assert reader.execute("select count(*) from public.events").fetchall() == [(2,)]
    finally:
        reader.close()
        loader.close()


def test_a_duckdb_schema_copies_into_postgresql_value_for_value(
    postgres_cluster: Any, tmp_path: Path
) -> None:
    """``nudge demo``'s load (``warehouse.copy_into_postgres``). Found in review: a value
    ``\\.`` alone on its line is COPY's end of data, and silently cut the table short."""
    source = duckdb.connect()
    source.execute("set TimeZone = 'UTC'")
    source.execute("create schema s")
    source.execute("create table s.words (word varchar)")
    words = ["\\.", "", None, 'a,"b"\nc\r\nd', "é ü 日本", "last"]
    source.executemany("insert into s.words values (?)", [[w] for w in words])
    source.execute(
        "create table s.orders (id integer, total decimal(10, 2), paid_at timestamptz, day date,"
        " ratio double, flag boolean)"
    )
    source.execute(
        "insert into s.orders values (1, 12.34, '2026-06-01 12:00:00+02', '2026-06-01', 0.5,"
        " true), (2, null, null, null, null, null)"
    )
    con = postgres_cluster.new_database("copy").warehouse(tmp_path / "state")
    try:
        con.begin()
        copied = copy_into_postgres(source, con, "s", tmp_path)
        con.commit()
        assert copied == {"s.orders": 2, "s.words": len(words)}
        assert sorted(con.execute("select word from s.words").fetchall(), key=str) == sorted(
            [(w,) for w in words], key=str
        )
        assert con.execute("select * from s.orders order by id").fetchall() == [
            tuple(row) for row in source.execute("select * from s.orders order by id").fetchall()
        ]
        types = con.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = 's' and table_name = 'orders' order by ordinal_position"
        ).fetchall()
        assert [t for _, t in types] == [
            "integer",
            "numeric",
            "timestamp with time zone",
            "date",
            "double precision",
            "boolean",
        ]
    finally:
        con.close()
        source.close()
