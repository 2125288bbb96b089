"""The incremental models compute exactly what a full rebuild computes.

Two real warehouses receive the same raw events as they "arrive", hour after hour: most on time,
some hours late (inside the late-arrival window), some before their time (clock skew), some twice
(a later, earlier-dated copy that must win, and identical re-deliveries). At every tick one
warehouse runs the tick's `dbt run` incrementally, the other `dbt run --full-refresh`, and every
table the tick builds (staging, intermediate, triggers, audience) must hold the same rows, apart
from the incremental bookkeeping columns. One tick is replayed earlier than the last (the models
start over), and the last step shows the documented limit: an event delivered later than the
window is seen only by `--full-refresh`.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from dagster_project import ledger
from dagster_project.config import DBT_PROJECT_DIR
from dagster_project.dbt_runner import ensure_manifest
from dagster_project.demo_data import generate_to_file
from dagster_project.incremental import rebuild_changed

pytestmark = pytest.mark.dbt

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SCHEMAS = ("staging", "intermediate", "triggers", "audience")
BOOKKEEPING = ("loaded_as_of", "loaded_at", "computed_as_of")
INCREMENTAL = (
    "staging.base_raw__events",
    "intermediate.int_carts__episodes",
    "intermediate.int_carts__summarized",
    "intermediate.int_customers__activity",
    "intermediate.int_customers__purchased_products",
    "intermediate.int_orders__itemized",
    "intermediate.int_product_views__sessionized",
)
TICKS = [END - timedelta(hours=h) for h in (30, 12, 6, 0)]
# The customer whose last event is dated days after the last tick.
FAR_AHEAD = "cus-far-ahead"
EventRow = tuple[str | None, str | None, str | None, datetime, str | None]


def _window_hours() -> int:
    variables = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    return int(variables["events_late_arrival_hours"])


@dataclass
class Pair:
    """The warehouse built incrementally and the one rebuilt in full, fed the same raw events."""

    incremental: Path
    full: Path
    tmp: Path
    # (arrival, row) of every event still to arrive.
    pending: list[tuple[datetime, EventRow]]

    def deliver(self, until: datetime) -> int:
        """Insert into both warehouses' raw.events what has arrived by ``until``."""
        due = [row for arrival, row in self.pending if arrival <= until]
        self.pending = [(a, row) for a, row in self.pending if a > until]
        for path in (self.incremental, self.full):
            _insert(path, due)
        return len(due)

    def tick(self, as_of: datetime) -> None:
        """The tick's models at ``as_of``: incremental in one warehouse, in full in the other,
        at the same time (two dbt processes, each with its own target)."""
        runs = [
            _start_dbt(self.incremental, self.tmp / "incremental", as_of),
            _start_dbt(self.full, self.tmp / "full", as_of, "--full-refresh"),
        ]
        for process in runs:
            out, _ = process.communicate(timeout=600)
            assert process.returncode == 0, out[-4000:]


def _start_dbt(warehouse: Path, tmp: Path, as_of: datetime, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    env.update(
        NUDGE_WAREHOUSE=str(warehouse),
        NUDGE_AS_OF=as_of.isoformat(),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dbt"),
            "run",
            "--select",
            "+tag:nudge_audience",
            *extra,
            "--target-path",
            str(tmp / "target"),
            "--log-path",
            str(tmp / "logs"),
        ],
        cwd=DBT_PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _insert(path: Path, rows: list[EventRow]) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute("set TimeZone = 'UTC'")
        con.executemany(
            "insert into raw.events (event_id, customer_id, event_name, occurred_at, properties) "
            "values (?, ?, ?, ?, ?)",
            rows,
        )
    finally:
        con.close()


def _arrivals(rows: list[EventRow], window: timedelta) -> list[tuple[datetime, EventRow]]:
    """When each event reaches raw.events: most on time, some late (inside the window), some
    early, and some twice."""
    rng = random.Random(13)
    arrivals: list[tuple[datetime, EventRow]] = []
    for row in rows:
        occurred_at = row[3]
        draw = rng.random()
        if draw < 0.70:
            arrivals.append((occurred_at, row))
        elif draw < 0.80:
            late = timedelta(minutes=rng.randint(30, int(window.total_seconds() // 60) - 600))
            arrivals.append((occurred_at + late, row))
        elif draw < 0.92:
            # Dated up to 5 hours after it arrives (a skewed clock): invisible until its time.
            arrivals.append((occurred_at - timedelta(minutes=rng.randint(10, 300)), row))
        elif draw < 0.96:
            # At-least-once delivery: the same event again, hours later.
            arrivals.append((occurred_at, row))
            arrivals.append((occurred_at + timedelta(hours=rng.randint(1, 20)), row))
        else:
            # A second copy dated a minute earlier arrives later: it wins the deduplication, in
            # a full rebuild and in the incremental model alike.
            arrivals.append((occurred_at, row))
            earlier = (row[0], row[1], row[2], occurred_at - timedelta(minutes=1), row[4])
            arrivals.append((occurred_at + timedelta(hours=rng.randint(1, 20)), earlier))
    return arrivals


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("incremental")
    incremental, full = tmp / "incremental.duckdb", tmp / "full.duckdb"
    generate_to_file(incremental, customers=200, end=END)
    con = duckdb.connect(str(incremental))
    try:
        con.execute("set TimeZone = 'UTC'")
        rows: list[EventRow] = con.execute(
            "select event_id, customer_id, event_name, occurred_at, cast(properties as varchar) "
            "from raw.events"
        ).fetchall()
        con.execute("delete from raw.events")
        ledger.ensure_ledger(con)
        con.execute("checkpoint")
    finally:
        con.close()
    full.write_bytes(incremental.read_bytes())
    arrivals = _arrivals(rows, timedelta(hours=_window_hours()))
    # Orders delivered so early that they become visible only two ticks later, after a tick that
    # did not see them yet; each from a customer of its own, who does nothing else.
    for n, (tick, shown_by) in enumerate(zip(TICKS, TICKS[2:], strict=False)):
        properties = {"order_id": f"ord-early-{n}", "revenue": 10, "products": []}
        early: EventRow = (
            f"evt-early-{n}",
            f"cus-early-{n}",
            "order_completed",
            shown_by - timedelta(minutes=30),
            json.dumps(properties),
        )
        arrivals.append((tick - timedelta(minutes=1), early))
    # A copy delivered later that wins (dated a minute earlier) and differs: another customer, and
    # no order id. Customer a and the order must disappear, as from a full rebuild.
    first = TICKS[0] - timedelta(hours=3)
    order = json.dumps({"order_id": "ord-moved", "revenue": 10, "products": []})
    arrivals.append((first, ("evt-moved", "cus-moved-a", "order_completed", first, order)))
    moved: EventRow = (
        "evt-moved",
        "cus-moved-b",
        "order_completed",
        first - timedelta(minutes=1),
        json.dumps({"revenue": 10}),
    )
    arrivals.append((TICKS[1] - timedelta(hours=1), moved))
    # An order taken over: an earlier order_completed with its id, under another customer and
    # another event id, arrives two ticks later (the tick after a load still recomputes what it
    # loaded). The first customer's purchases lose its products, though none of their events
    # changed.
    taken = TICKS[0] - timedelta(hours=4)
    products = [{"product_id": "p-taken", "name": "Mug", "price": 5}]
    taken_order = json.dumps({"order_id": "ord-taken", "revenue": 5, "products": products})
    arrivals.append((taken, ("evt-taken-a", "cus-taken-a", "order_completed", taken, taken_order)))
    taker: EventRow = (
        "evt-taken-b",
        "cus-taken-b",
        "order_completed",
        taken - timedelta(minutes=1),
        taken_order,
    )
    arrivals.append((TICKS[2] - timedelta(hours=1), taker))
    # A cart left before the first tick, converted two ticks later by an order through another
    # cart: only the customer's events change, yet the cart's episode must end.
    added = json.dumps({"cart_id": "cart-left", "product_id": "p1", "price": 5, "quantity": 1})
    left = TICKS[0] - timedelta(hours=2)
    arrivals.append((left, ("evt-cart-left", "cus-cart", "product_added", left, added)))
    elsewhere = json.dumps({"order_id": "ord-elsewhere", "cart_id": "cart-other", "revenue": 5})
    ordered = TICKS[2] - timedelta(hours=1)
    arrivals.append(
        (ordered, ("evt-ordered-elsewhere", "cus-cart", "order_completed", ordered, elsewhere))
    )
    # A customer seen before the first tick who also sent, before the first tick, an event
    # dated days after the last one (a badly skewed clock): invisible to every tick, so it must
    # not make each of them recompute the customer from their whole history.
    viewed = json.dumps({"product_id": "p1", "name": "Mug", "price": 5})
    seen = TICKS[0] - timedelta(hours=5)
    again = seen + timedelta(hours=1)
    arrivals.append((seen, ("evt-far-ahead-a", FAR_AHEAD, "product_viewed", seen, viewed)))
    # A second look within a day: a browse (int_product_views__sessionized drops single looks).
    arrivals.append((again, ("evt-far-ahead-b", FAR_AHEAD, "product_viewed", again, viewed)))
    ahead = END + timedelta(days=3)
    arrivals.append((seen, ("evt-far-ahead-c", FAR_AHEAD, "product_viewed", ahead, viewed)))
    yield Pair(incremental, full, tmp, arrivals)


def _differences(pair: Pair) -> dict[str, dict[str, Any]]:
    """Per table the tick builds: rows only in one of the two warehouses (bookkeeping aside)."""
    con = duckdb.connect(str(pair.incremental), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"attach '{pair.full}' as full_build (read_only)")
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_catalog = 'full_build' and table_type = 'BASE TABLE' "
            "and table_schema in (select unnest($schemas)) order by all",
            {"schemas": list(SCHEMAS)},
        ).fetchall()
        assert len(tables) > 20, tables
        found: dict[str, dict[str, Any]] = {}
        for schema, table in tables:
            columns = [
                name
                for (name,) in con.execute(
                    "select column_name from information_schema.columns "
                    "where table_catalog = 'full_build' and table_schema = ? and table_name = ? "
                    "order by ordinal_position",
                    [schema, table],
                ).fetchall()
                if name not in BOOKKEEPING
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            a = f'select {listed} from "{schema}"."{table}"'
            b = f'select {listed} from full_build."{schema}"."{table}"'
            only_incremental = con.execute(f"{a} except all {b}").fetchall()
            only_full = con.execute(f"{b} except all {a}").fetchall()
            if only_incremental or only_full:
                found[f"{schema}.{table}"] = {
                    "only_incremental": only_incremental[:3],
                    "only_full": only_full[:3],
                }
        return found
    finally:
        con.close()


def _computed(path: Path, relation: str, column: str) -> dict[datetime, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        rows = con.execute(f"select {column}, count(*) from {relation} group by 1").fetchall()
        return {instant: count for instant, count in rows}
    finally:
        con.close()


def _count(path: Path, query: str) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        row = con.execute(query).fetchone()
        assert row is not None
        return int(row[0])
    finally:
        con.close()


def test_every_tick_builds_exactly_what_a_full_rebuild_builds(pair: Pair) -> None:
    seen_early = 0
    for tick in TICKS:
        delivered = pair.deliver(tick)
        pair.tick(tick)
        assert _differences(pair) == {}, f"tick {tick:%Y-%m-%d %H:%M}, {delivered} delivered"
        # Events dated after the tick (delivered early) are kept for later, not shown yet.
        after = f"where occurred_at > '{tick.isoformat()}'"
        seen_early += _count(
            pair.incremental, f"select count(*) from staging.base_raw__events {after}"
        )
        assert (
            _count(pair.incremental, f"select count(*) from staging.stg_raw__events {after}") == 0
        )
    assert seen_early > 0
    # The copy that moved an order to another customer took its rows along.
    assert (
        _count(
            pair.incremental,
            "select count(*) from intermediate.int_customers__activity "
            "where customer_id in ('cus-moved-a', 'cus-moved-b')",
        )
        == 1
    )
    # The order taken over left the first customer's purchases.
    assert (
        _count(
            pair.incremental,
            "select count(*) from intermediate.int_customers__purchased_products "
            "where product_id = 'p-taken' and customer_id = 'cus-taken-b'",
        )
        == 1
        and _count(
            pair.incremental,
            "select count(*) from intermediate.int_customers__purchased_products "
            "where customer_id = 'cus-taken-a'",
        )
        == 0
    )
    # The cart left before the first tick was converted by the order through another cart.
    assert (
        _count(
            pair.incremental,
            "select count(*) from intermediate.int_carts__episodes "
            "where cart_id = 'cart-left' and ordered_at is not null",
        )
        == 1
    )
    # Copies were delivered, and deduplicated alike in both.
    assert _count(pair.incremental, "select count(*) from raw.events") > _count(
        pair.incremental, "select count(distinct event_id) from raw.events"
    )
    # The incremental run really was incremental: after the last tick, customers whose events
    # did not change keep the instant they were computed at...
    for model in ("int_customers__activity", "int_product_views__sessionized"):
        instants = _computed(pair.incremental, f"intermediate.{model}", "computed_as_of")
        assert instants.get(END, 0) > 0, (model, instants)
        assert sum(n for t, n in instants.items() if t < END) > 0, (model, instants)
        # ...while the full rebuild computed every row at the tick.
        assert set(_computed(pair.full, f"intermediate.{model}", "computed_as_of")) == {END}
    # An event dated after the tick changed nothing the tick can see: the customer holding one
    # was last computed around the load of their events at the first tick (the tick after a
    # load recomputes it once more), not at each tick since.
    for model in ("int_customers__activity", "int_product_views__sessionized"):
        computed = _computed(
            pair.incremental,
            f"(select * from intermediate.{model} where customer_id = '{FAR_AHEAD}')",
            "computed_as_of",
        )
        assert computed and max(computed) <= TICKS[1], (model, computed)


def test_trigger_models_pick_for_their_entries_what_the_picks_view_holds(pair: Pair) -> None:
    """win_back and post_purchase_review rank product picks only for the customers they can
    mail at this tick (macro nudge_product_picks_cte); each list must be what the view of
    every buyer's picks holds for that customer, names and prices included."""
    query = """
        with
        view_picks as (
            select
                customer_id,
                list(
                    {'product_id': product_id, 'name': name, 'url': url,
                     'image_url': image_url, 'price': price, 'currency': currency}
                    order by pick_rank
                ) as picks
            from intermediate.int_customers__product_picks
            group by customer_id
        ),
        entries as (
            select customer_id, recommended_products from triggers.win_back
            union all
            select customer_id, recommended_products from triggers.post_purchase_review
        )
        select
            count(*) filter (where len(entries.recommended_products) > 0),
            count(*) filter (
                where entries.recommended_products != coalesce(view_picks.picks, [])
            )
        from entries
        left join view_picks on entries.customer_id = view_picks.customer_id
    """
    con = duckdb.connect(str(pair.incremental), read_only=True)
    try:
        row = con.execute(query).fetchone()
    finally:
        con.close()
    assert row is not None
    with_picks, differing = row
    assert with_picks > 0, "no entry with picks: the check compares nothing"
    assert differing == 0


def test_a_tick_replayed_earlier_starts_the_models_over_and_matches(pair: Pair) -> None:
    rewound = END - timedelta(hours=3, minutes=30)
    pair.tick(rewound)
    assert _differences(pair) == {}
    for relation in INCREMENTAL[1:]:
        assert set(_computed(pair.incremental, relation, "computed_as_of")) == {rewound}, relation
    # ...and the next tick forward picks up from there.
    later = END + timedelta(hours=3)
    pair.deliver(later)
    pair.tick(later)
    assert _differences(pair) == {}


def test_an_event_delivered_later_than_the_window_needs_a_full_refresh(pair: Pair) -> None:
    tick = END + timedelta(hours=4)
    window = timedelta(hours=_window_hours())
    con = duckdb.connect(str(pair.incremental), read_only=True)
    try:
        customer_id = con.execute(
            "select customer_id from intermediate.int_customers__activity "
            "where order_count > 0 order by customer_id limit 1"
        ).fetchone()
        assert customer_id is not None
    finally:
        con.close()
    too_late: EventRow = (
        "evt-too-late",
        customer_id[0],
        "order_completed",
        tick - window - timedelta(hours=2),
        json.dumps({"order_id": "ord-too-late", "revenue": 42, "products": []}),
    )
    pair.pending.append((tick, too_late))
    pair.deliver(tick)
    pair.tick(tick)
    missing = _differences(pair)
    assert "intermediate.int_orders__itemized" in missing
    assert "staging.base_raw__events" in missing
    # The documented way out: `dbt run --full-refresh` (what `nudge run --full-refresh` runs).
    process = _start_dbt(pair.incremental, pair.tmp / "incremental", tick, "--full-refresh")
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-4000:]
    assert _differences(pair) == {}
    assert (
        _count(
            pair.incremental,
            "select count(*) from intermediate.int_orders__itemized "
            "where order_id = 'ord-too-late'",
        )
        == 1
    )


def test_an_incremental_model_whose_code_changed_is_rebuilt_in_full(con: Any) -> None:
    """Rows an incremental model kept must not carry an older release's logic: a table from
    before the model was incremental (no fingerprint recorded), or one whose SQL, macros or vars
    changed since, is dropped before the build, so dbt builds it in full."""
    manifest = json.loads(ensure_manifest().read_text())
    con.execute("create schema if not exists intermediate")
    # As an earlier release left it: a plain table without the bookkeeping columns.
    con.execute("create table intermediate.int_customers__activity as select 'c1' as customer_id")
    assert rebuild_changed(con, manifest) == ["intermediate.int_customers__activity"]
    assert _tables(con) == set()
    recorded = dict(
        con.execute("select relation, fingerprint from nudge.incremental_models").fetchall()
    )
    assert set(recorded) == set(INCREMENTAL)
    # Built since (by dbt) with the recorded code: kept.
    con.execute("create table intermediate.int_customers__activity as select 'c1' as customer_id")
    assert rebuild_changed(con, manifest) == []
    # A release changes the model's SQL (or, alike, an upstream model, a macro, a var).
    changed = copy.deepcopy(manifest)
    node = changed["nodes"]["model.nudge.stg_raw__events"]
    node["raw_code"] = node["raw_code"].replace("is_first_copy", "is_first_copy and true")
    assert rebuild_changed(con, changed) == ["intermediate.int_customers__activity"]
    # A preview's tables are fingerprinted on their own.
    con.execute("create schema if not exists preview_intermediate")
    con.execute("create table preview_intermediate.int_orders__itemized as select 'o1' as order_id")
    assert rebuild_changed(con, changed, "preview_") == [
        "preview_intermediate.int_orders__itemized"
    ]
    assert rebuild_changed(con, changed) == []


def _tables(con: Any) -> set[str]:
    rows = con.execute(
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_schema in ('staging', 'intermediate') and table_type = 'BASE TABLE'"
    ).fetchall()
    return {name for (name,) in rows}


def test_a_tick_run_ahead_of_time_loses_no_event(pair: Pair) -> None:
    """``nudge run --as-of`` in the future: the events that happen after it still arrive later,
    and the next tick's window counts from when that tick ran, not from its instant (else
    those events fell before the window)."""
    now = datetime.now(UTC)
    ahead = now + timedelta(days=5)
    pair.deliver(ahead)
    pair.tick(ahead)
    happened: EventRow = (
        "evt-after-the-early-tick",
        "cus-after-the-early-tick",
        "order_completed",
        datetime.now(UTC) + timedelta(minutes=1),
        json.dumps({"order_id": "ord-after-the-early-tick", "revenue": 5, "products": []}),
    )
    pair.pending.append((now, happened))
    pair.deliver(ahead)
    pair.tick(now + timedelta(days=4))
    assert _differences(pair) == {}
    assert (
        _count(
            pair.incremental,
            "select count(*) from staging.stg_raw__events "
            "where event_id = 'evt-after-the-early-tick'",
        )
        == 1
    )
