"""Many one-click POSTs at once while ticks drain the landing store: every acknowledged change
reaches the warehouse exactly once. (The 10,000-request figures are in make bench-serve.)"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from dagster_project import ledger
from dagster_project.consent import drain
from dagster_project.links import LinkSettings
from dagster_project.warehouse import connect
from tests.support.service import Service

REQUESTS = 400


def test_concurrent_one_clicks_during_drains_land_exactly_once(
    service: Service, links: LinkSettings, tmp_path: Path
) -> None:
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    stop = threading.Event()
    drains = 0

    def ticks() -> None:
        nonlocal drains
        while not stop.is_set():
            drain(con, service.store)
            drains += 1

    ticker = threading.Thread(target=ticks)
    ticker.start()
    paths = [
        links.unsubscribe_url(f"c{i}", "marketing", f"s{i}").removeprefix(links.public_url)
        for i in range(REQUESTS)
    ]
    with httpx.Client(base_url=service.url, timeout=30) as client:

        def post(path: str) -> int:
            return client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(post, paths))
    stop.set()
    ticker.join()
    drain(con, service.store)
    assert codes == [200] * REQUESTS
    assert drains > 1
    count, customers = con.execute(
        "select count(*), count(distinct customer_id) from nudge.consent_changes"
    ).fetchone()
    assert (count, customers) == (REQUESTS, REQUESTS)
    assert service.store.undrained() == []
