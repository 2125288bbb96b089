"""Tests for the synthetic demo warehouse: contract, determinism and the planted edge cases."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from dagster_project import demo_data
from dagster_project.demo_data import (
    BOGUS_TIMEZONES,
    EVENT_NAMES,
    generate_demo_warehouse,
    generate_to_file,
)

END = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
N = 500
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

EXPECTED_SCHEMAS = {
    "customers": [
        ("customer_id", "VARCHAR"),
        ("email", "VARCHAR"),
        ("first_name", "VARCHAR"),
        ("timezone", "VARCHAR"),
        ("birthday", "DATE"),
        ("created_at", "TIMESTAMP WITH TIME ZONE"),
    ],
    "events": [
        ("event_id", "VARCHAR"),
        ("customer_id", "VARCHAR"),
        ("event_name", "VARCHAR"),
        ("occurred_at", "TIMESTAMP WITH TIME ZONE"),
        ("properties", "VARCHAR"),
    ],
    "subscriptions": [
        ("customer_id", "VARCHAR"),
        ("list", "VARCHAR"),
        ("status", "VARCHAR"),
        ("changed_at", "TIMESTAMP WITH TIME ZONE"),
    ],
}


def _scalar(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: list[object] | dict[str, object] | None = None,
) -> int:
    row = con.execute(sql, params or []).fetchone()
    assert row is not None
    return row[0]


def _digest(path: Path) -> str:
    """Hash of every table's rows in a canonical order (row order on disk is irrelevant)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        h = hashlib.sha256()
        for table in ("customers", "events", "subscriptions"):
            for row in con.execute(f"select * from raw.{table} order by all").fetchall():
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        con.close()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    path = tmp_path_factory.mktemp("demo") / "wh.duckdb"
    counts = generate_to_file(path, customers=N, end=END)
    assert counts["customers"] == N
    con = duckdb.connect(str(path), read_only=True)
    yield con
    con.close()


# --------------------------------------------------------------------------------------------
# Contract and determinism
# --------------------------------------------------------------------------------------------


def test_same_seed_is_deterministic_and_other_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "c.duckdb"
    counts_a = generate_to_file(a, customers=200, end=END, seed=11)
    counts_b = generate_to_file(b, customers=200, end=END, seed=11)
    generate_to_file(c, customers=200, end=END, seed=12)
    assert counts_a == counts_b
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_schemas_match_contract(warehouse: duckdb.DuckDBPyConnection) -> None:
    for table, expected in EXPECTED_SCHEMAS.items():
        cols = warehouse.execute(
            """select column_name, data_type from information_schema.columns
               where table_schema = 'raw' and table_name = ? order by ordinal_position""",
            [table],
        ).fetchall()
        assert cols == expected, table


def test_returned_counts_match_tables_and_scale(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "scale.duckdb"))
    try:
        small = generate_demo_warehouse(con, customers=200, end=END)
        for table, n in small.items():
            assert _scalar(con, f"select count(*) from raw.{table}") == n
        # Regenerating replaces the tables instead of appending to them.
        assert generate_demo_warehouse(con, customers=200, end=END) == small
        assert _scalar(con, "select count(*) from raw.customers") == 200
        big = generate_demo_warehouse(con, customers=800, end=END)
    finally:
        con.close()
    assert big["customers"] == 800
    assert 3 * small["events"] < big["events"] < 5 * small["events"]
    assert 3 * small["subscriptions"] < big["subscriptions"] < 5 * small["subscriptions"]


def test_a_longer_history_holds_proportionally_more_events(tmp_path: Path) -> None:
    # The benchmark reaches 50M events through a longer history: sessions are drawn per ~30
    # days of window, so 90 days hold about three times a month's events, not the same events
    # spread thinner.
    month = generate_to_file(tmp_path / "month.duckdb", customers=300, end=END, days=30)
    quarter = generate_to_file(tmp_path / "quarter.duckdb", customers=300, end=END, days=90)
    assert quarter["customers"] == month["customers"] == 300
    assert 2.2 * month["events"] < quarter["events"] < 3.5 * month["events"]


def test_a_failed_generation_leaves_the_previous_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        before = generate_demo_warehouse(con, customers=100, end=END)

        def fail(*_: object) -> None:
            raise RuntimeError("killed half way")

        # Events are written (and committed, chunk by chunk) before the subscriptions are built.
        monkeypatch.setattr(demo_data, "_build_subscriptions", fail)
        with pytest.raises(RuntimeError, match="killed half way"):
            generate_demo_warehouse(con, customers=400, end=END, seed=3)
        for table, n in before.items():
            assert _scalar(con, f"select count(*) from raw.{table}") == n
        staged = "select count(*) from duckdb_tables() where table_name like '__nudge_demo%'"
        assert _scalar(con, staged) == 0
    finally:
        con.close()


def test_events_stream_in_chunks_and_planted_copies_are_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 1,000 rows: the planted duplicates and copies come from rows already written,
    # read back by position, and equal a generation that kept everything in one chunk.
    small = tmp_path / "small.duckdb"
    generate_to_file(tmp_path / "one.duckdb", customers=300, end=END)
    chunks: list[int] = []
    insert = demo_data._insert

    def counted(con: duckdb.DuckDBPyConnection, table: str, arrow: pa.Table) -> None:
        if table == "events":
            chunks.append(arrow.num_rows)
        insert(con, table, arrow)

    monkeypatch.setattr(demo_data, "CHUNK_ROWS", 1_000)
    monkeypatch.setattr(demo_data, "_insert", counted)
    counts = generate_to_file(small, customers=300, end=END)
    assert len(chunks) > 3 and max(chunks) == 1_000
    assert sum(chunks) == counts["events"]
    assert _digest(small) == _digest(tmp_path / "one.duckdb")


def test_a_row_read_back_that_is_not_the_row_written_fails(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        con.execute("create schema raw")
        con.execute(demo_data._DDL["events"].format(name="__nudge_demo_events"))
        ev = demo_data._EventStream(lambda table: demo_data._insert(con, "events", table))
        ev.add("aa000000-0000-4000-8000-000000000000", "c1", "product_viewed", 0, '{"a": 1}')
        ev.add("bb000000-0000-4000-8000-000000000000", "c1", "product_viewed", 0, '{"b": 22}')
        ev.flush()
        read = demo_data._events_reader(con, ev)
        assert read([1])[1][0].startswith("bb")
        # What the generator believes it wrote at position 1 differs from the table's row.
        ev.id_byte[1] = 0xAA
        with pytest.raises(RuntimeError, match="not the row the generator wrote"):
            read([1])
    finally:
        con.close()


@pytest.mark.parametrize("seed", range(20))
def test_eligible_positions_draw_like_the_list_they_stand_for(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(1, 400)
    protected, pos = [], 0
    while pos < n:
        lo = pos + rng.randrange(0, 30)
        hi = min(n, lo + rng.randrange(0, 10))
        if lo < n:
            protected.append((lo, hi))
        pos = hi + 1
    as_list = [i for i in range(n) if not any(lo <= i < hi for lo, hi in protected)]
    eligible = demo_data._Eligible(n, protected)
    assert len(eligible) == len(as_list)
    assert [eligible[j] for j in range(len(eligible))] == as_list
    a, b = random.Random(seed), random.Random(seed)
    if as_list:
        assert [a.choice(eligible) for _ in range(50)] == [b.choice(as_list) for _ in range(50)]
    with pytest.raises(IndexError):
        eligible[len(as_list)]


def test_end_must_be_timezone_aware() -> None:
    con = duckdb.connect()
    try:
        with pytest.raises(ValueError, match="timezone-aware"):
            generate_demo_warehouse(con, customers=10, end=datetime(2025, 6, 15))
    finally:
        con.close()


def test_generate_to_file_creates_parents_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "wh.duckdb"
    counts = generate_to_file(path, customers=50, end=END, days=7)
    # A second read-write connection only succeeds if the generator closed its own.
    con = duckdb.connect(str(path))
    try:
        assert _scalar(con, "select count(*) from raw.events") == counts["events"]
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# Planted bad rows
# --------------------------------------------------------------------------------------------


def test_duplicate_event_ids_are_exact_duplicates(warehouse: duckdb.DuckDBPyConnection) -> None:
    dup_ids = _scalar(
        warehouse,
        "select count(*) from (select event_id from raw.events group by 1 having count(*) > 1)",
    )
    assert dup_ids > 0
    differing = _scalar(
        warehouse,
        """select count(*) from (
             select event_id from raw.events group by 1
             having count(distinct (customer_id, event_name, occurred_at, properties)) > 1)""",
    )
    assert differing == 0


def test_bad_event_rows_exist(warehouse: duckdb.DuckDBPyConnection) -> None:
    assert _scalar(warehouse, "select count(*) from raw.events where customer_id is null") > 0
    assert (
        _scalar(warehouse, "select count(*) from raw.events where not json_valid(properties)") > 0
    )
    future = warehouse.execute(
        "select count(*), max(occurred_at) from raw.events where occurred_at > ?", [END]
    ).fetchone()
    assert future is not None
    assert future[0] > 0
    assert future[1] <= END + timedelta(days=3)
    unknown = _scalar(
        warehouse,
        "select count(*) from raw.events where event_name not in ?",
        [list(EVENT_NAMES)],
    )
    assert unknown > 0


def test_bad_rows_are_a_small_minority(warehouse: duckdb.DuckDBPyConnection) -> None:
    total = _scalar(warehouse, "select count(*) from raw.events")
    bad = _scalar(
        warehouse,
        "select count(*) from raw.events where not json_valid(properties) or customer_id is null",
    )
    assert 0 < bad < 0.05 * total


def test_invalid_and_messy_emails(warehouse: duckdb.DuckDBPyConnection) -> None:
    emails = [r[0] for r in warehouse.execute("select email from raw.customers").fetchall()]
    normalised = [e.strip().lower() if e else e for e in emails]
    invalid = [e for e in normalised if not e or not EMAIL_RE.match(e)]
    assert 0 < len(invalid) < 0.05 * N
    messy = [e for e, n in zip(emails, normalised, strict=True) if e and e != n and n]
    assert messy
    assert all(EMAIL_RE.match(n) for n in (e.strip().lower() for e in messy))
    # Duplicate-ish: two customers whose addresses coincide after trim/lower.
    valid = [n for n in normalised if n and EMAIL_RE.match(n)]
    assert len(valid) > len(set(valid))


def test_bogus_timezones_are_not_real(warehouse: duckdb.DuckDBPyConnection) -> None:
    unknown = {
        r[0]
        for r in warehouse.execute(
            """select distinct timezone from raw.customers
               where timezone is not null
                 and timezone not in (select name from pg_timezone_names())"""
        ).fetchall()
    }
    assert unknown
    # Every non-bogus zone is a real IANA name, so only the planted ones fail the lookup.
    assert unknown <= set(BOGUS_TIMEZONES)
    assert _scalar(warehouse, "select count(*) from raw.customers where timezone is null") > 0


# --------------------------------------------------------------------------------------------
# Scenarios the demo relies on
# --------------------------------------------------------------------------------------------

_CARTS = """
    with clean as (
        select * from raw.events
        where customer_id is not null and json_valid(properties) and occurred_at <= $end
    ),
    carts as (
        select properties ->> 'cart_id' as cart_id, max(occurred_at) as last_at
        from clean
        where properties ->> 'cart_id' is not null and event_name <> 'order_completed'
        group by 1
    ),
    ordered as (
        select distinct properties ->> 'cart_id' as cart_id
        from clean where event_name = 'order_completed'
    )
"""


def test_recent_abandoned_carts_exist(warehouse: duckdb.DuckDBPyConnection) -> None:
    end = {"end": END}
    recent_abandoned = _scalar(
        warehouse,
        _CARTS
        + """select count(*) from carts
             where last_at > $end - interval 30 hour
               and cart_id not in (select cart_id from ordered)""",
        end,
    )
    total = _scalar(warehouse, _CARTS + "select count(*) from carts", end)
    abandoned = _scalar(
        warehouse,
        _CARTS + "select count(*) from carts where cart_id not in (select cart_id from ordered)",
        end,
    )
    emptied = _scalar(
        warehouse,
        """select count(*) from raw.events where event_name = 'cart_viewed'
           and json_valid(properties) and json_array_length(properties -> 'products') = 0""",
    )
    assert recent_abandoned >= 10
    assert 0.5 < abandoned / total < 0.8
    assert emptied > 0


def test_lapsed_customers_ordered_88_to_100_days_ago_and_nothing_since(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    rows = warehouse.execute(
        """select customer_id, max(occurred_at) as last_at
           from raw.events where customer_id is not null
           group by 1
           having max(occurred_at) <= $end - interval 88 day
              and min(occurred_at) >= $end - interval 100 day
              and count(*) filter (where event_name = 'order_completed') > 0""",
        {"end": END},
    ).fetchall()
    assert len(rows) >= 0.02 * N
    # Some cross the 90-day mark during the demo day (the last 24 h before END).
    crossing = [
        c for c, last in rows if END - timedelta(days=91) < last <= END - timedelta(days=90)
    ]
    assert crossing


def test_returning_customers_exist(warehouse: duckdb.DuckDBPyConnection) -> None:
    returning = _scalar(
        warehouse,
        """select count(*) from (
             select customer_id from raw.events where customer_id is not null
             group by 1
             having count(*) filter (where event_name = 'order_completed'
                                       and occurred_at < $end - interval 88 day) > 0
                and max(occurred_at) filter (where occurred_at <= $end)
                    > $end - interval 30 day)""",
        {"end": END},
    )
    assert returning > 0


def _born_on(con: duckdb.DuckDBPyConnection, month: int, day: int) -> int:
    return _scalar(
        con,
        "select count(*) from raw.customers where month(birthday) = ? and day(birthday) = ?",
        [month, day],
    )


def test_birthdays_on_end_date_and_leap_day(warehouse: duckdb.DuckDBPyConnection) -> None:
    # Planted on top of the ~1 that 500 uniform birthdays would give by chance.
    assert _born_on(warehouse, END.month, END.day) >= 3
    for delta in (-1, 1):  # local dates either side of END's UTC date
        near = END + timedelta(days=delta)
        assert _born_on(warehouse, near.month, near.day) > 0
    assert _born_on(warehouse, 2, 29) > 0
    nulls = _scalar(warehouse, "select count(*) from raw.customers where birthday is null")
    assert 0.05 * N < nulls < 0.3 * N


def test_order_revenue_equals_sum_of_products(warehouse: duckdb.DuckDBPyConnection) -> None:
    rows = warehouse.execute(
        """select properties from raw.events
           where event_name = 'order_completed' and json_valid(properties)"""
    ).fetchall()
    assert rows
    for (raw,) in rows:
        props = json.loads(raw)
        assert props["currency"] == "USD"
        assert props["order_id"] and props["cart_id"]
        expected = sum(p["price"] * p["quantity"] for p in props["products"])
        assert props["revenue"] == pytest.approx(expected, abs=0.005)


def test_orders_convert_known_carts(warehouse: duckdb.DuckDBPyConnection) -> None:
    orphans = _scalar(
        warehouse,
        """with ok as (select * from raw.events where json_valid(properties))
           select count(*) from ok o
           where o.event_name = 'order_completed'
             and not exists (
               select 1 from ok a
               where a.event_name = 'product_added'
                 and a.properties ->> 'cart_id' = o.properties ->> 'cart_id'
                 and a.occurred_at <= o.occurred_at)""",
    )
    assert orphans == 0


def test_new_customers_have_signed_up_at_created_at(warehouse: duckdb.DuckDBPyConnection) -> None:
    stats = warehouse.execute(
        """select count(*), count(*) filter (where e.occurred_at = c.created_at)
           from raw.events e join raw.customers c using (customer_id)
           where e.event_name = 'signed_up' and e.occurred_at <= ?""",
        [END],
    ).fetchone()
    assert stats is not None
    assert stats[0] > 0
    assert stats[0] == stats[1]


def test_consent_history(warehouse: duckdb.DuckDBPyConnection) -> None:
    assert (
        _scalar(warehouse, "select count(*) from raw.subscriptions where list <> 'marketing'") == 0
    )
    statuses = {
        r[0] for r in warehouse.execute("select distinct status from raw.subscriptions").fetchall()
    }
    assert statuses == {"subscribed", "unsubscribed", "pending"}
    # Pending (double opt-in not confirmed) only for recent sign-ups, who are still asked.
    old_pending = _scalar(
        warehouse,
        """select count(*) from raw.subscriptions
           where status = 'pending' and changed_at < $end - interval 4 days""",
        {"end": END},
    )
    assert old_pending == 0
    no_row = _scalar(
        warehouse,
        """select count(*) from raw.customers
           where customer_id not in (select customer_id from raw.subscriptions)""",
    )
    assert 0 < no_row < 0.15 * N
    unsub_last_day = _scalar(
        warehouse,
        """select count(*) from raw.subscriptions
           where status = 'unsubscribed' and changed_at > $end - interval 1 day""",
        {"end": END},
    )
    assert unsub_last_day > 0
    resubscribed = _scalar(
        warehouse,
        """select count(*) from (
             select customer_id from raw.subscriptions group by 1
             having arg_max(status, changed_at) = 'subscribed'
                and count(*) filter (where status = 'unsubscribed') > 0)""",
    )
    assert resubscribed > 0
