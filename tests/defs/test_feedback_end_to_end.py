"""Provider events end to end: real ticks (``nudge run``) sending through SendGrid's API on a
local server, a real ``nudge serve`` receiving SendGrid's signed Event Webhook, and the next
ticks acting on what it reported: a hard bounce and a complaint suppress for every trigger, an
unsubscribe at SendGrid unsubscribes from marketing, a click on a reminder withholds the
discount; the eligibility tables say why."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from dagster_project.clock import this_hour
from tests.support.esp_server import EspServer
from tests.support.processes import free_port, nudge
from tests.support.raw_tables import create_raw_tables, daytime_zone
from tests.support.webhook_signing import sendgrid_event, sendgrid_keypair, sign_sendgrid

pytestmark = pytest.mark.dbt

# Ticks at T0 + 2 h (first reminders), + 26 h (second reminders, welcome day 0) and + 74 h
# (the discount): all in the past, replayed as a catch-up with --allow-late, all at the same
# local hour (noon: ZONE).
T0 = this_hour() - timedelta(hours=76)
# Noon local time at the first tick (T0 + 2 h), so no tick falls in quiet hours.
ZONE = daytime_zone(T0 + timedelta(hours=2))
API_KEY = "SG.feedback-e2e"
PEOPLE = ("ann", "bob", "cy", "dee")


def _raw_warehouse(path: Path) -> None:
    """Four subscribers who each left a 30-dollar cart at T0 and signed up at T0 + 20 h."""
    con = duckdb.connect(str(path))
    create_raw_tables(con)
    for cid in PEOPLE:
        con.execute(
            "insert into raw.customers values (?, ?, ?, ?, null, ?)",
            [
                cid,
                f"{cid}@example.com",
                cid.title(),
                ZONE,
                T0 - timedelta(days=60),
            ],
        )
        con.execute(
            "insert into raw.subscriptions values (?, 'marketing', 'subscribed', ?)",
            [cid, T0 - timedelta(days=60)],
        )
        con.execute(
            "insert into raw.events values (?, ?, 'product_added', ?, ?)",
            [
                f"cart_{cid}",
                cid,
                T0,
                f'{{"cart_id": "cart_{cid}", "product_id": "p1", "name": "Mug", "price": 30}}',
            ],
        )
        con.execute(
            "insert into raw.events values (?, ?, 'signed_up', ?, '{}')",
            [f"signup_{cid}", cid, T0 + timedelta(hours=20)],
        )
    # Fresh events for the last tick (the source freshness guard holds absence triggers).
    con.execute(
        "insert into raw.events values ('view', 'zed', 'page_viewed', ?, '{}')",
        [T0 + timedelta(hours=73)],
    )
    con.close()


def _query(warehouse: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _tick(as_of: datetime, env: dict[str, str]) -> str:
    process = nudge("run", "--as-of", as_of.isoformat(), "--allow-late", env=env)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, out + err
    return out


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], object, EspServer]]:
    private_key, public_key = sendgrid_keypair()
    port = free_port()
    with EspServer(api_key=API_KEY) as esp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "DAGSTER_"))}
        env.update(
            NUDGE_WAREHOUSE=str(tmp_path / "warehouse.duckdb"),
            NUDGE_ESP="sendgrid",
            NUDGE_ESP_API_KEY=API_KEY,
            NUDGE_ESP_BASE_URL=esp.url,
            NUDGE_LINK_SECRET="feedback-e2e-" + "k" * 32,
            NUDGE_PUBLIC_URL="https://nudge.example",
            NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY=public_key,
            DAGSTER_HOME=str(tmp_path / "dagster_home"),
        )
        server = nudge("serve", "--port", str(port), env=env, quiet=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, "nudge serve exited"
                assert time.monotonic() < deadline, "nudge serve did not start"
                time.sleep(0.1)
            yield url, env, private_key, esp
        finally:
            server.terminate()
            server.wait(timeout=10)


def test_bounces_complaints_unsubscribes_and_clicks_steer_the_next_ticks(
    tmp_path: Path, setup: tuple[str, dict[str, str], object, EspServer]
) -> None:
    url, env, private_key, esp = setup
    warehouse = tmp_path / "warehouse.duckdb"
    _raw_warehouse(warehouse)

    # Tick 1: every cart's first reminder goes through SendGrid's API.
    _tick(T0 + timedelta(hours=2), env)
    sent = dict(
        _query(
            warehouse,
            "select customer_id, send_id from nudge.send_ledger"
            " where step = 'reminder' and status = 'sent'",
        )
    )
    assert sorted(sent) == list(PEOPLE)
    assert sorted(esp.received_send_ids("sendgrid")) == sorted(sent.values())

    # SendGrid reports back, in one signed batch, an hour after the reminders.
    at = (T0 + timedelta(hours=3)).timestamp()
    events = [
        sendgrid_event("delivered", email=f"{c}@example.com", send_id=sent[c], timestamp=at)
        for c in PEOPLE
    ] + [
        sendgrid_event("bounce", email="ann@example.com", send_id=sent["ann"], timestamp=at),
        sendgrid_event("spamreport", email="bob@example.com", send_id=sent["bob"], timestamp=at),
        sendgrid_event("unsubscribe", email="cy@example.com", send_id=sent["cy"], timestamp=at),
        sendgrid_event(
            "open",
            email="dee@example.com",
            send_id=sent["dee"],
            timestamp=at,
            sg_machine_open=True,
        ),
        sendgrid_event(
            "click",
            email="dee@example.com",
            send_id=sent["dee"],
            timestamp=at + 60,
            url="https://shop.example/cart/cart_dee",
        ),
        sendgrid_event("processed", email="dee@example.com", send_id=sent["dee"], timestamp=at),
    ]
    body = json.dumps(events).encode()

    def post(payload: bytes, **headers: str) -> httpx.Response:
        return httpx.post(
            url + "/webhooks/sendgrid",
            content=payload,
            headers={"Content-Type": "application/json", **headers},
        )

    # A forgery stores nothing.
    forged = post(body, **sign_sendgrid(private_key, body + b" ", time.time()))  # type: ignore[arg-type]
    assert forged.status_code == 403
    answer = post(body, **sign_sendgrid(private_key, body, time.time()))  # type: ignore[arg-type]
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 9, "new": 9, "ignored": 1}
    # SendGrid retries a batch it did not see answered: stored once.
    again = post(body, **sign_sendgrid(private_key, body, time.time()))  # type: ignore[arg-type]
    assert again.json() == {"received": 9, "new": 0, "ignored": 1}

    # Tick 2 drains them. Ann (hard bounce) and Bob (complaint) are suppressed for every
    # trigger, Cy is unsubscribed from marketing at SendGrid's word, Dee goes on.
    _tick(T0 + timedelta(hours=26), env)
    assert _query(warehouse, "select count(*) from nudge.email_events") == [(9,)]
    reasons = {
        (trigger, customer): (reason, suppression, consent)
        for trigger, customer, reason, suppression, consent in _query(
            warehouse,
            "select 'abandoned_cart', customer_id, exclusion_reason, suppression_reason,"
            " consent_source from audience.abandoned_cart_eligibility"
            " where step = 'second_reminder'"
            " union all select 'welcome', customer_id, exclusion_reason, suppression_reason,"
            " consent_source from audience.welcome_eligibility where step = 'day_0'",
        )
    }
    for trigger in ("abandoned_cart", "welcome"):
        assert reasons[(trigger, "ann")] == ("suppressed", "hard_bounce", "import")
        assert reasons[(trigger, "bob")] == ("suppressed", "complaint", "import")
        assert reasons[(trigger, "cy")] == ("unsubscribed", None, "provider:sendgrid")
    second = dict(
        _query(
            warehouse,
            "select customer_id, status from nudge.send_ledger where step = 'second_reminder'",
        )
    )
    assert second == {"dee": "sent"}

    # Dee's reminder was clicked (a person: the machine open alone would not count).
    engaged = _query(
        warehouse,
        "select customer_id, is_opened, is_clicked, first_machine_opened_at is not null"
        " from intermediate.int_email_events__by_send where step = 'reminder'"
        " and customer_id = 'dee'",
    )
    assert engaged == [("dee", False, True, True)]

    # Tick 3, when the discount is due: Dee clicked a reminder, so no discount.
    _tick(T0 + timedelta(hours=74), env)
    discount = dict(
        _query(
            warehouse,
            "select customer_id, exclusion_reason from audience.abandoned_cart_eligibility"
            " where step = 'discount'",
        )
    )
    assert discount == {
        "ann": "suppressed",
        "bob": "suppressed",
        "cy": "unsubscribed",
        "dee": "condition_not_met",
    }
    assert _query(
        warehouse,
        "select count(*) from nudge.send_ledger where step = 'discount' and status = 'sent'",
    ) == [(0,)]
    # Nobody suppressed or unsubscribed was mailed after the events arrived.
    after = _query(
        warehouse,
        "select distinct customer_id from nudge.send_ledger"
        " where status = 'sent' and step != 'reminder'",
    )
    assert {c for (c,) in after} <= {"dee"}
