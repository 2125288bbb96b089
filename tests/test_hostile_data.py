"""Hostile customer data does not reach the inbox as it is: a real demo warehouse, hostile rows
added to its raw tables, one real `dbt run`, and the eligibility tables the send step reads.

* Personalization fields are held to the length limits in dbt/dbt_project.yml (vars
  max_name_chars, max_product_name_chars, max_url_chars): names are cut and end in "…", a URL
  over the limit becomes null.
* A cart or order item whose price or quantity is not a number is left out of the email and
  counted in invalid_item_count; an entry with nothing valid left is excluded with reason
  invalid_items (not `exited`, although its item_count is 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from dagster_project import ledger
from dagster_project.config import DBT_PROJECT_DIR
from dagster_project.demo_data import generate_to_file

pytestmark = pytest.mark.dbt

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ELLIPSIS = "…"

HOSTILE_NAME = "Ørjan-" * 34_000  # about 200 KB
HOSTILE_PRODUCT = "Ultra Deluxe Ceramic Mug " * 20_000  # about 500 KB
HOSTILE_URL = "https://shop.example/p/mug?" + "x" * 5_000


@dataclass(frozen=True)
class Built:
    warehouse: Path
    limits: dict[str, int]


def _limits() -> dict[str, int]:
    variables = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    return {
        name: int(variables[name])
        for name in ("max_name_chars", "max_product_name_chars", "max_url_chars")
    }


def _event(
    event_id: str, customer_id: str, event_name: str, at: datetime, /, **properties: Any
) -> tuple[str, str, str, datetime, str]:
    return (event_id, customer_id, event_name, at, json.dumps(properties))


def _add_hostile_rows(con: duckdb.DuckDBPyConnection) -> None:
    signed_up = END - timedelta(days=60)
    customers = ["h_long", "h_mixed", "h_invalid", "h_order_invalid", "h_order_mixed"]
    con.executemany(
        "insert into raw.customers (customer_id, email, first_name, timezone, birthday, "
        "created_at) values (?, ?, ?, 'UTC', null, ?)",
        [
            (c, f"{c}@example.com", HOSTILE_NAME if c == "h_long" else "Sam", signed_up)
            for c in customers
        ],
    )
    con.executemany(
        "insert into raw.subscriptions (customer_id, list, status, changed_at) "
        "values (?, 'marketing', 'subscribed', ?)",
        [(c, signed_up) for c in customers],
    )
    carted = END - timedelta(minutes=90)  # the reminder (1 h) is due at this tick
    ordered = END - timedelta(days=10, minutes=30)  # the review request (10 d) is due
    events = [
        # A 500 KB product name and a URL no email can use.
        _event(
            "h1", "h_long", "product_added", carted,
            cart_id="h_cart_long", product_id="p_long", name=HOSTILE_PRODUCT, price=19.99,
            quantity=1, url=HOSTILE_URL, image_url="https://shop.example/img/mug.png",
        ),
        # A valid Mug next to a Pen priced "twelve".
        _event(
            "h2", "h_mixed", "product_added", carted,
            cart_id="h_cart_mixed", product_id="p_mug", name="Mug", price=12.5, quantity=2,
        ),
        _event(
            "h3", "h_mixed", "product_added", carted + timedelta(minutes=1),
            cart_id="h_cart_mixed", product_id="p_pen", name="Pen", price="twelve", quantity=1,
        ),
        # Nothing valid: a price "twelve" and a quantity "abc".
        _event(
            "h4", "h_invalid", "product_added", carted,
            cart_id="h_cart_invalid", product_id="p_pen", name="Pen", price="twelve",
        ),
        _event(
            "h5", "h_invalid", "product_added", carted + timedelta(minutes=1),
            cart_id="h_cart_invalid", product_id="p_bowl", name="Bowl", price=5, quantity="abc",
        ),
        _event(
            "h6", "h_order_invalid", "order_completed", ordered,
            order_id="h_order_invalid", revenue=12,
            products=[{"product_id": "p_pen", "name": "Pen", "price": "twelve"}],
        ),
        _event(
            "h7", "h_order_mixed", "order_completed", ordered,
            order_id="h_order_mixed", revenue=30,
            products=[
                {"product_id": "p_mug", "name": "Mug", "price": 12.5, "quantity": 2},
                {"product_id": "p_pen", "name": "Pen", "price": 5, "quantity": "abc"},
            ],
        ),
    ]  # fmt: skip
    con.executemany(
        "insert into raw.events (event_id, customer_id, event_name, occurred_at, properties) "
        "values (?, ?, ?, ?, ?)",
        events,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tmp = tmp_path_factory.mktemp("hostile")
    warehouse = tmp / "warehouse.duckdb"
    generate_to_file(warehouse, customers=300, end=END)
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("set TimeZone = 'UTC'")
        ledger.ensure_ledger(con)
        _add_hostile_rows(con)
    finally:
        con.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    env.update(NUDGE_WAREHOUSE=str(warehouse), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            "run",
            "--vars",
            json.dumps({"as_of": END.isoformat()}),
            # Its own target and logs: another dbt may be using the project's at the same time.
            "--target-path",
            str(tmp / "target"),
            "--log-path",
            str(tmp / "logs"),
        ],
        cwd=DBT_PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    yield Built(warehouse, _limits())


def _rows(built: Built, query: str, *params: Any) -> list[dict[str, Any]]:
    con = duckdb.connect(str(built.warehouse), read_only=True)
    try:
        cursor = con.execute(query, list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def _cart_steps(built: Built, customer_id: str) -> list[dict[str, Any]]:
    rows = _rows(
        built,
        "select * from audience.abandoned_cart_eligibility where customer_id = ? "
        "order by step_index",
        customer_id,
    )
    assert rows, f"no abandoned_cart_eligibility row for {customer_id}"
    return rows


def test_the_limits_are_documented_vars() -> None:
    assert _limits() == {
        "max_name_chars": 100,
        "max_product_name_chars": 200,
        "max_url_chars": 2048,
    }


def test_a_200_kb_first_name_is_cut_to_the_limit_with_an_ellipsis(built: Built) -> None:
    limit = built.limits["max_name_chars"]
    (reminder, *_) = _cart_steps(built, "h_long")
    name = reminder["first_name"]
    assert len(name) <= limit
    assert name.endswith(ELLIPSIS)
    assert HOSTILE_NAME.startswith(name.removesuffix(ELLIPSIS))
    (customer,) = _rows(
        built, "select first_name from staging.stg_raw__customers where customer_id = 'h_long'"
    )
    assert customer["first_name"] == name


def test_a_500_kb_product_name_is_cut_and_an_overlong_url_dropped(built: Built) -> None:
    limit = built.limits["max_product_name_chars"]
    (reminder, *_) = _cart_steps(built, "h_long")
    assert reminder["exclusion_reason"] is None
    (item,) = reminder["items"]
    assert len(item["name"]) <= limit
    assert item["name"].endswith(ELLIPSIS)
    assert HOSTILE_PRODUCT.startswith(item["name"].removesuffix(ELLIPSIS).rstrip())
    assert item["url"] is None  # a cut URL would break: none at all
    assert item["image_url"] == "https://shop.example/img/mug.png"
    assert reminder["cart_value"] == Decimal("19.99")
    # What the templates get from this row is now a few hundred characters, not 700 KB.
    assert len(json.dumps(reminder, default=str)) < 10_000


def test_no_personalization_field_anywhere_exceeds_its_limit(built: Built) -> None:
    limits = built.limits
    (worst,) = _rows(
        built,
        """
        select
            (select max(length(first_name)) from audience.abandoned_cart_eligibility) as names,
            (
                select max(length(item.name))
                from (select unnest(items) as item from audience.abandoned_cart_eligibility)
            ) as product_names,
            (
                select max(greatest(length(item.url), length(item.image_url)))
                from (select unnest(items) as item from audience.abandoned_cart_eligibility)
            ) as urls,
            (
                select max(length(item.name))
                from (select unnest(items) as item from triggers.post_purchase_review)
            ) as order_product_names
        """,
    )
    assert worst["names"] <= limits["max_name_chars"]
    assert worst["product_names"] <= limits["max_product_name_chars"]
    assert worst["urls"] <= limits["max_url_chars"]
    assert worst["order_product_names"] <= limits["max_product_name_chars"]


def test_an_item_priced_twelve_is_left_out_and_counted(built: Built) -> None:
    (reminder, *_) = _cart_steps(built, "h_mixed")
    assert reminder["step"] == "reminder"
    assert reminder["is_eligible"] is True
    assert reminder["exclusion_reason"] is None
    assert [(i["name"], i["quantity"], i["price"]) for i in reminder["items"]] == [
        ("Mug", 2, Decimal("12.50"))
    ]
    assert reminder["item_count"] == 2
    assert reminder["cart_value"] == Decimal("25.00")
    assert reminder["invalid_item_count"] == 1
    assert reminder["entry_exclusion_reason"] is None


def test_a_cart_with_only_invalid_items_is_excluded_not_exited(built: Built) -> None:
    steps = _cart_steps(built, "h_invalid")
    assert {s["step"] for s in steps} >= {"reminder", "second_reminder"}
    for step in steps:
        assert step["is_eligible"] is False
        assert step["exclusion_reason"] == "invalid_items"
        assert step["rule_exclusion_reason"] == "invalid_items"
        assert step["items"] is None
        assert step["item_count"] == 0
        assert step["invalid_item_count"] == 2


def test_orders_with_non_numeric_prices_or_quantities(built: Built) -> None:
    rows = {
        r["customer_id"]: r
        for r in _rows(
            built,
            "select * from audience.post_purchase_review_eligibility "
            "where customer_id like 'h_order_%'",
        )
    }
    assert set(rows) == {"h_order_invalid", "h_order_mixed"}
    assert rows["h_order_invalid"]["exclusion_reason"] == "invalid_items"
    assert rows["h_order_invalid"]["invalid_item_count"] == 1
    mixed = rows["h_order_mixed"]
    assert mixed["exclusion_reason"] is None
    assert [(i["name"], i["quantity"]) for i in mixed["items"]] == [("Mug", 2)]
    assert mixed["item_count"] == 2
    assert mixed["invalid_item_count"] == 1


def test_ordinary_demo_data_is_untouched(built: Built) -> None:
    (counts,) = _rows(
        built,
        """
        select
            count(*) filter (where invalid_item_count > 0 and customer_id not like 'h_%')
                as demo_invalid,
            count(*) filter (where exclusion_reason = 'invalid_items') as invalid_items,
            count(*) filter (where is_eligible and customer_id not like 'h_%') as demo_eligible
        from audience.abandoned_cart_eligibility
        """,
    )
    assert counts["demo_invalid"] == 0
    assert counts["invalid_items"] == len(_cart_steps(built, "h_invalid"))
    # Triggers without an entry_exclusion_reason of their own get the column, always null.
    (welcome,) = _rows(
        built,
        "select count(*) as n, count(entry_exclusion_reason) as reasons "
        "from audience.welcome_eligibility",
    )
    assert welcome["n"] > 0 and welcome["reasons"] == 0
