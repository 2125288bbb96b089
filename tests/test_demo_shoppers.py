"""The demo's shoppers: after a tick, some of the people it touched order, deterministically,
once, no later than the demo's last tick, and those who clicked far more often."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from dagster_project import ledger
from dagster_project.config import Settings
from dagster_project.demo_events import is_clicked
from dagster_project.demo_shoppers import MAX_BASKETS, MAX_HOURS, _baskets, shoppers_respond
from dagster_project.providers import ProviderSettings
from tests.support.raw_tables import create_raw_tables

TICK = datetime(2026, 6, 1, 12, tzinfo=UTC)
N = 3000


def _warehouse(path: Path) -> Settings:
    con = duckdb.connect(str(path))
    create_raw_tables(con)
    # The demo's own raw.events holds text, malformed JSON included (demo_data.py).
    con.execute("alter table raw.events alter properties type varchar")
    ledger.ensure_ledger(con)
    basket = {"order_id": "o-old", "revenue": 42.5, "products": [{"product_id": "p1"}]}
    con.execute(
        "insert into raw.events values ('e-old', 'someone', 'order_completed', ?, ?)",
        [TICK - timedelta(days=3), json.dumps(basket)],
    )
    # A malformed row, as the demo plants: never reused as a basket.
    con.execute(
        "insert into raw.events values ('e-bad', 'x', 'order_completed', ?, '{\"order_id\": ')",
        [TICK - timedelta(days=3)],
    )
    # Every third customer held out, the rest sent: s<i> touched c<i> at TICK.
    con.execute(
        "insert into nudge.send_ledger (send_id, trigger, trigger_key, step, customer_id,"
        " status, attempts, as_of, context, planned_at, updated_at)"
        " select 's' || i, 'win_back', 'k' || i, 'we_miss_you', 'c' || i,"
        " case when i % 3 = 0 then 'holdout' else 'sent' end, 1, $tick, '{}', $tick, $tick"
        " from range($n) as t(i)",
        {"tick": TICK, "n": N},
    )
    con.close()
    return Settings(
        warehouse=path,
        provider=ProviderSettings(esp="outbox", outbox_dir=path.parent / "outbox"),
        from_email="shop@example.com",
        dagster_home=path.parent / "dagster_home",
    )


def _orders(settings: Settings) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return con.execute(
            "select event_id, customer_id, occurred_at, properties from raw.events"
            " where event_id like 'demo-order:%' order by event_id"
        ).fetchall()
    finally:
        con.close()


def test_shoppers_order_after_a_touch_more_often_when_they_clicked(tmp_path: Path) -> None:
    settings = _warehouse(tmp_path / "wh.duckdb")
    end = TICK + timedelta(days=10)
    placed = shoppers_respond(settings, TICK, end)
    orders = _orders(settings)
    assert placed.placed == len(orders) > 0
    assert 0 < placed.after_holdout < placed.placed
    for _, _, at, properties in orders:
        assert TICK < at <= TICK + timedelta(hours=MAX_HOURS, minutes=30)
        order = json.loads(properties)
        assert order["revenue"] == 42.5 and order["currency"] == "USD"
    ordered = {customer for _, customer, _, _ in orders}
    groups: dict[str, list[bool]] = {"holdout": [], "clicked": [], "not_clicked": []}
    for i in range(N):
        clicked = "clicked" if is_clicked(f"s{i}") else "not_clicked"
        group = "holdout" if i % 3 == 0 else clicked
        groups[group].append(f"c{i}" in ordered)
    rates = {g: sum(v) / len(v) for g, v in groups.items()}
    assert rates["clicked"] > 3 * rates["not_clicked"] > rates["holdout"] > 0
    # A rerun of the tick orders nothing more, and the same.
    assert shoppers_respond(settings, TICK, end).placed == placed.placed
    assert _orders(settings) == orders


def test_no_order_is_dated_after_the_demos_last_tick(tmp_path: Path) -> None:
    settings = _warehouse(tmp_path / "wh.duckdb")
    end = TICK + timedelta(hours=12)
    shoppers_respond(settings, TICK, end)
    orders = _orders(settings)
    assert orders and all(at <= end for _, _, at, _ in orders)


def test_a_tick_that_touched_no_one_orders_nothing(tmp_path: Path) -> None:
    settings = _warehouse(tmp_path / "wh.duckdb")
    later = TICK + timedelta(hours=1)
    assert shoppers_respond(settings, later, later + timedelta(days=5)).placed == 0


def test_only_well_formed_orders_become_baskets_with_their_revenue_when_it_is_a_number() -> None:
    orders = [
        ("e1", '{"order_id": '),  # not JSON
        ("e2", None),
        ("e3", '["a list"]'),  # not an object
        ("e4", '{"products": "p1", "revenue": 3}'),  # products not a list
        ("e5", '{"products": [{"product_id": "p1"}], "revenue": 12.5}'),
        ("e6", '{"products": [], "revenue": "7"}'),  # a number spelled as text
        ("e7", '{"products": [{"product_id": "p2"}], "revenue": "n/a"}'),
        ("e8", '{"products": [{"product_id": "p3"}], "revenue": true}'),
        ("e9", '{"products": [{"product_id": "p4"}]}'),
    ]
    assert _baskets(orders) == [
        ([{"product_id": "p1"}], 12.5),
        ([], 7.0),
        ([{"product_id": "p2"}], None),
        ([{"product_id": "p3"}], None),
        ([{"product_id": "p4"}], None),
    ]
    # The first MAX_BASKETS well-formed ones by event id, however the rows came and with bad
    # ones among them (skipped, not counted).
    many = [(f"e{i:04}", json.dumps({"products": [i], "revenue": i})) for i in range(700)]
    bad = [(f"e{i:04}x", '{"products": ') for i in range(0, 700, 7)]
    chosen = _baskets(list(reversed(many + bad)))
    assert [revenue for _, revenue in chosen] == [float(i) for i in range(MAX_BASKETS)]
