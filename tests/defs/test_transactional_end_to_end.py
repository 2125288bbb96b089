"""Transactional mail within minutes: ``nudge run --transactional`` (the job the 5-minute
schedule launches) as real processes, with real dbt, a real Dagster home and Postmark's batch
API on loopback.

* An order placed at 12:01 is confirmed by the 12:05 run with its products and totals; a
  parcel shipped at 12:02 is announced with its carrier's tracking link. Transactional mail
  needs no marketing consent, but a suppressed address still gets nothing, an order older
  than the step's grace is never confirmed late, and an order after the run's instant waits.
* The 5-minute run builds only what transactional mail needs: no marketing table, no
  marketing email.
* The hourly tick and the 5-minute run interleaved (the hourly one stopped between its dbt
  build and its order_confirmation step while the other runs whole) share the ledger and the
  warehouse lock: the order is confirmed exactly once, the hourly tick leaves the table another
  run rebuilt (``stale_table``), and nothing the first run sent goes again.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dagster_project.warehouse import connection
from tests.support.esp_server import EspServer
from tests.support.processes import nudge
from tests.support.raw_tables import create_raw_tables, daytime_zone
from tests.support.spec_schemas import spec_available

pytestmark = pytest.mark.dbt

TOKEN = "pm-transactional-test-token"
SHIPPED = "1Z999AA10123456784"


def _at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=UTC)


def _products(*items: tuple[str, str, float, int]) -> list[dict[str, Any]]:
    return [
        {"product_id": pid, "name": name, "price": price, "quantity": quantity}
        for pid, name, price, quantity in items
    ]


def _plant(warehouse: Path) -> None:
    zone = daytime_zone(_at(13))
    with connection(warehouse) as con:
        create_raw_tables(con)
        for customer in ("c_ord", "c_ship", "c_supp", "c_cart", "c_late", "c_reship"):
            con.execute(
                "insert into raw.customers values (?, ?, 'Ada', ?, null, ?)",
                [customer, f"{customer}@example.com", zone, _at(9, day=1).replace(month=1)],
            )
        con.executemany(
            "insert into raw.subscriptions values (?, ?, ?, ?)",
            [
                # Said no to marketing: an order confirmation is not marketing.
                ("c_ord", "marketing", "unsubscribed", _at(9).replace(month=5)),
                ("c_cart", "marketing", "subscribed", _at(9).replace(month=5)),
                ("c_supp", "suppression", "suppressed", _at(9).replace(month=5)),
            ],
        )
        events = [
            ("e1", "c_ord", "order_completed", _at(12, 1), {
                "order_id": "o1", "revenue": 69.90, "currency": "USD",
                "products": _products(("p1", "Insulated Coffee Mug", 27.50, 2),
                                      ("p2", "Pour-Over <Kettle>", 9.90, 1)),
            }),
            # Ordered two days ago (past the 24 h grace), shipped at 12:02.
            ("e2", "c_ship", "order_completed", _at(10, day=30).replace(month=5), {
                "order_id": "o_old", "revenue": 24.0,
                "products": _products(("p3", "Classic Crew Tee", 24.0, 1)),
            }),
            ("e3", "c_ship", "order_shipped", _at(12, 2), {
                "order_id": "o_old", "carrier": "UPS", "tracking_number": SHIPPED,
            }),
            ("e4", "c_supp", "order_completed", _at(12, 3), {"order_id": "o_supp", "revenue": 5}),
            ("e5", "c_cart", "product_added", _at(10), {
                "cart_id": "k1", "product_id": "p1", "name": "Insulated Coffee Mug",
                "price": 27.50, "quantity": 1,
            }),
            # After the first run's instant: the future there, confirmed by a later run.
            ("e6", "c_late", "order_completed", _at(12, 58), {"order_id": "o_late", "revenue": 9}),
            # A parcel announced twelve days ago, its event delivered again at 12:03: the
            # window reads the order's earlier events too, so it is not announced twice.
            ("e7", "c_reship", "order_shipped", _at(12, day=20).replace(month=5), {
                "order_id": "o_reship", "carrier": "UPS", "tracking_number": "1Z555",
            }),
            ("e8", "c_reship", "order_shipped", _at(12, 3), {
                "order_id": "o_reship", "carrier": "UPS", "tracking_number": "1Z555",
            }),
        ]  # fmt: skip
        con.executemany(
            "insert into raw.events values (?, ?, ?, ?, ?)",
            [(eid, cid, name, at, json.dumps(props)) for eid, cid, name, at, props in events],
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run 1 (transactional at 12:05) alone, then the hourly tick at 13:00 and the transactional
    run at 13:05 at the same time; every request the provider got, per run."""
    folder = tmp_path_factory.mktemp("transactional")
    warehouse = folder / "warehouse.duckdb"
    _plant(warehouse)
    validate = ["postmark"] if spec_available("postmark") else []
    with EspServer(api_key=TOKEN, validate=validate) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "DAGSTER_"))}
        env.update(
            NUDGE_WAREHOUSE=str(warehouse),
            DAGSTER_HOME=str(folder / "dagster_home"),
            NUDGE_ESP="postmark",
            NUDGE_ESP_BASE_URL=server.url,
            NUDGE_ESP_API_KEY=TOKEN,
            NUDGE_LINK_SECRET="transactional-link-secret-" + "k" * 32,
            NUDGE_PUBLIC_URL="https://nudge.shop.example",
        )
        first = nudge(
            "run", "--transactional", "--as-of", _at(12, 5).isoformat(), "--allow-late",
            "--json", env=env,
        )  # fmt: skip
        first_out, first_err = first.communicate(timeout=600)
        assert first.returncode == 0, first_out[-3000:] + first_err[-3000:]
        first_requests = server.send_requests()
        with connection(warehouse) as con:
            tables = {
                f"{schema}.{name}"
                for schema, name in con.execute(
                    "select table_schema, table_name from information_schema.tables"
                ).fetchall()
            }
        # The hourly tick for 13:00 stops after its dbt build, before its order_confirmation
        # step takes the lock; the 5-minute run for 13:05 goes all the way meanwhile (drain,
        # build, send), then the hourly tick carries on.
        gate = folder / "hourly-may-go"
        hourly = nudge(
            "run", "--as-of", _at(13).isoformat(), "--allow-late", "--json",
            env={**env, "NUDGE_PAUSEPOINT": f"before_send_step:order_confirmation={gate}"},
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not Path(f"{gate}.reached").exists():
            assert hourly.poll() is None, hourly.communicate()
            assert time.monotonic() < deadline, "the hourly tick never reached its send step"
            time.sleep(0.1)
        between = nudge(
            "run", "--transactional", "--as-of", _at(13, 5).isoformat(), "--allow-late",
            "--json", env=env,
        )  # fmt: skip
        between_out, between_err = between.communicate(timeout=600)
        assert between.returncode == 0, between_out[-3000:] + between_err[-3000:]
        gate.touch()
        hourly_out, hourly_err = hourly.communicate(timeout=600)
        assert hourly.returncode == 0, hourly_out[-3000:] + hourly_err[-3000:]
        return {
            "warehouse": warehouse,
            "first": json.loads(first_out),
            "first_requests": first_requests,
            "tables": tables,
            "hourly": json.loads(hourly_out),
            "between": json.loads(between_out),
            "requests": server.send_requests(),
            "accepted": server.accepted_counts(),
        }


def _messages(requests: list[Any]) -> dict[str, dict[str, Any]]:
    """Postmark batch messages by the send's trigger and recipient."""
    out: dict[str, dict[str, Any]] = {}
    for request in requests:
        for message in request.body:
            headers = {h["Name"]: h["Value"] for h in message.get("Headers", [])}
            out[f"{message['Tag']}:{message['To']}"] = message | {"headers": headers}
    return out


def test_an_order_is_confirmed_by_the_next_five_minute_run_with_its_items_and_totals(
    world: dict[str, Any],
) -> None:
    messages = _messages(world["first_requests"])
    confirmation = messages["order_confirmation:c_ord@example.com"]
    assert confirmation["Subject"] == "Order o1 confirmed: $69.90"
    html, text = confirmation["HtmlBody"], confirmation["TextBody"]
    assert "Insulated Coffee Mug" in html and "2 &times; $27.50" in html
    # Shop data is escaped, never markup.
    assert "Pour-Over &lt;Kettle&gt;" in html and "<Kettle>" not in html
    assert "Subtotal: $64.90" in text and "Total: $69.90" in text
    assert "https://shop.example/orders/o1" in text
    # Transactional: no unsubscribe header or footer, though c_ord said no to marketing.
    assert "List-Unsubscribe" not in confirmation["headers"]
    assert "Unsubscribe" not in text


def test_a_shipment_is_announced_with_the_carriers_tracking_link(world: dict[str, Any]) -> None:
    messages = _messages(world["first_requests"])
    shipped = messages["shipping_notification:c_ship@example.com"]
    assert shipped["Subject"] == "Your order o_old is on its way"
    assert f'href="https://www.ups.com/track?tracknum={SHIPPED}"' in shipped["HtmlBody"]
    assert "with UPS" in shipped["TextBody"] and "Classic Crew Tee" in shipped["TextBody"]


def test_the_five_minute_run_sends_only_what_it_should(world: dict[str, Any]) -> None:
    # Exactly these two: not the suppressed address, not the order past its grace, not the
    # order after the run's instant, not the parcel announced before, and no marketing email.
    assert set(_messages(world["first_requests"])) == {
        "order_confirmation:c_ord@example.com",
        "shipping_notification:c_ship@example.com",
    }
    summaries = {t["trigger"]: t for t in world["first"]["triggers"]}
    assert set(summaries) == {"confirm_subscription", "order_confirmation", "shipping_notification"}
    assert summaries["order_confirmation"]["excluded"] == {"suppressed": 1, "expired": 1}
    # Only the models transactional mail needs were built: no marketing table at all.
    assert "audience.order_confirmation_eligibility" in world["tables"]
    assert "intermediate.int_orders__itemized" in world["tables"]
    assert not any("abandoned_cart" in t or "int_customers__activity" in t for t in world["tables"])


def test_the_hourly_tick_and_the_five_minute_run_interleaved_send_each_email_once(
    world: dict[str, Any],
) -> None:
    hourly = {t["trigger"]: t for t in world["hourly"]["triggers"]}
    between = {t["trigger"]: t for t in world["between"]["triggers"]}
    # The 13:05 run rebuilt order_confirmation's table under the paused hourly tick and sent
    # the order of 12:58; the hourly tick saw a table built for another instant and left it.
    assert between["order_confirmation"]["sent"] == 1
    assert hourly["order_confirmation"]["outcome"] == "stale_table"
    assert hourly["order_confirmation"]["sent"] == 0
    assert hourly["abandoned_cart"]["sent"] == 1
    messages = _messages(world["requests"])
    # The cart reminded by the hourly tick; what the 12:05 run sent is not sent again.
    assert set(messages) == {
        "order_confirmation:c_ord@example.com",
        "shipping_notification:c_ship@example.com",
        "order_confirmation:c_late@example.com",
        "abandoned_cart:c_cart@example.com",
    }
    assert set(world["accepted"].values()) == {1}, world["accepted"]
    with connection(world["warehouse"]) as con:
        sent = con.execute(
            "select trigger, customer_id, count(*) from nudge.send_ledger"
            " where status = 'sent' group by all order by all"
        ).fetchall()
    assert sent == [
        ("abandoned_cart", "c_cart", 1),
        ("order_confirmation", "c_late", 1),
        ("order_confirmation", "c_ord", 1),
        ("shipping_notification", "c_ship", 1),
    ]
