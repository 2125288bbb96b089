"""One-click unsubscribe end to end: real ticks (``nudge run``) through the outbox, a real
``nudge serve`` process, and an unsubscribe that arrives while the next tick holds the warehouse,
between its dbt build and its push."""

from __future__ import annotations

import email
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from dagster_project.clock import this_hour
from dagster_project.landing import LandingStore
from dagster_project.warehouse import WarehouseLockTimeout, warehouse_lock
from tests.support.processes import free_port, nudge
from tests.support.raw_tables import create_raw_tables, daytime_zone

pytestmark = pytest.mark.dbt

# The last tick runs an hour ahead of now and the one before at this hour: live ticks (no
# --allow-late), as the schedule runs them, so the unsubscribe made now is in their past.
T0 = this_hour() - timedelta(hours=27)
# Noon local time at the first tick (T0 + 2 h), so no tick falls in quiet hours.
ZONE = daytime_zone(T0 + timedelta(hours=2))
SECRET = "e2e-link-secret-" + "z" * 32


def _raw_warehouse(path: Path) -> None:
    """Two customers who each left a cart at T0, and a later view so events are fresh."""
    con = duckdb.connect(str(path))
    create_raw_tables(con)
    for cid in ("ann", "bob", "cy"):
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
    for cid in ("ann", "bob"):
        con.execute(
            "insert into raw.events values (?, ?, 'product_added', ?, ?)",
            [
                f"e_{cid}",
                cid,
                T0,
                f'{{"cart_id": "cart_{cid}", "product_id": "p1", "name": "Mug", "price": 30}}',
            ],
        )
    con.execute(
        "insert into raw.events values ('e_view', 'cy', 'page_viewed', ?, '{}')",
        [T0 + timedelta(hours=26)],
    )
    con.close()


def _env(tmp: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "DAGSTER_"))}
    env.update(
        NUDGE_WAREHOUSE=str(tmp / "warehouse.duckdb"),
        NUDGE_OUTBOX_DIR=str(tmp / "outbox"),
        NUDGE_LINK_SECRET=SECRET,
        NUDGE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        DAGSTER_HOME=str(tmp / "dagster_home"),
        **extra,
    )
    return env


def _tick(as_of: datetime, env: dict[str, str]) -> subprocess.Popen[str]:
    late = ["--allow-late"] if as_of < this_hour() else []
    return nudge("run", "--as-of", as_of.isoformat(), *late, env=env)


def _finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, out + err
    return out


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = _env(tmp_path, port)
    server = nudge("serve", "--port", str(port), env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "nudge serve did not start"
            time.sleep(0.1)
        yield url, env
    finally:
        server.terminate()
        server.wait(timeout=10)


def _ledger(warehouse: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_an_unsubscribe_during_a_tick_is_answered_at_once_and_honoured_by_that_push(
    tmp_path: Path, service: tuple[str, dict[str, str]]
) -> None:
    url, env = service
    warehouse = tmp_path / "warehouse.duckdb"
    _raw_warehouse(warehouse)

    # Tick 1: both carts get their first reminder, with RFC 8058 headers.
    _finish(_tick(T0 + timedelta(hours=2), env))
    emails = {
        email.message_from_bytes(p.read_bytes())["To"]: email.message_from_bytes(p.read_bytes())
        for p in (tmp_path / "outbox" / "abandoned_cart").glob("*.eml")
    }
    assert sorted(emails) == ["ann@example.com", "bob@example.com"]
    ann = emails["ann@example.com"]
    assert ann["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = ann["List-Unsubscribe"].strip("<>")
    assert link.startswith(url + "/u/")

    # A mail scanner follows the link: nothing changes.
    assert httpx.get(link).status_code == 200
    store = LandingStore(Path(str(warehouse) + ".landing.sqlite"))
    assert store.undrained() == []

    # Tick 2 stops between its build and its push, holding the warehouse.
    gate = tmp_path / "go"
    tick = _tick(
        T0 + timedelta(hours=27),
        {**env, "NUDGE_PAUSEPOINT": f"before_push:abandoned_cart={gate}"},
    )
    try:
        deadline = time.monotonic() + 240
        while not Path(str(gate) + ".reached").exists():
            assert tick.poll() is None, tick.communicate()
            assert time.monotonic() < deadline, "the tick never reached its push"
            time.sleep(0.1)
        with pytest.raises(WarehouseLockTimeout), warehouse_lock(warehouse, timeout=0.2):
            pass
        started = time.monotonic()
        response = httpx.post(link, data={"List-Unsubscribe": "One-Click"})
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        # The tick holds the lock until the gate opens, below: a service that waited for it
        # would not answer at all. 3 s leaves a loaded CI machine room and still says "at once".
        assert elapsed < 3.0, f"the service answered in {elapsed:.2f} s"
    finally:
        gate.touch()
    _finish(tick)

    statuses = dict(
        _ledger(
            warehouse,
            "select customer_id, status || ':' || coalesce(reason, '') from nudge.send_ledger"
            " where step = 'second_reminder'",
        )
    )
    assert statuses == {"ann": "skipped:unsubscribed_before_send", "bob": "sent:"}

    # Tick 3 drains the change: the rules themselves now exclude Ann, naming the source.
    # Its instant is after the click even when the clock passed an hour since T0 was set:
    # a change after a tick's instant is that tick's future.
    _finish(_tick(max(T0 + timedelta(hours=28), this_hour() + timedelta(hours=1)), env))
    rows = _ledger(
        warehouse,
        "select distinct rule_exclusion_reason, consent_source"
        " from audience.abandoned_cart_eligibility where customer_id = 'ann'",
    )
    assert rows == [("unsubscribed", "one_click")]
    changes = _ledger(warehouse, "select customer_id, status, source from nudge.consent_changes")
    assert changes == [("ann", "unsubscribed", "one_click")]
    audit = _ledger(warehouse, "select action, actor, subject from nudge.audit_log")
    assert ("consent_change", "service", "ann") in audit
