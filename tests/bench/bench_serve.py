"""``nudge serve`` under load while ticks run: ``python -m tests.bench.bench_serve``.

    python -m tests.bench.bench_serve [--requests 10000] [--concurrency 32] [--customers 2000]

A real ``nudge serve`` process on loopback takes ``--requests`` one-click POSTs (each for a
different customer) from a bounded pool of ``--concurrency`` clients, while real ticks
(``nudge run``, dbt and the send step) run back to back on a demo warehouse and drain the
landing store. Then a last tick drains the rest and the bench checks that the warehouse holds
every change exactly once.

Reported: requests/s, p50 and p99 latency of the one-click POST, and the same for ``GET
/healthz`` on the same server in the same run: the baseline (no fsync, no token), so the ratio
says what durability and token checks cost on this machine, whatever its speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import duckdb
import httpx

from dagster_project.clock import this_hour
from dagster_project.demo_data import generate_to_file
from dagster_project.links import LinkSettings
from tests.support.processes import free_port, nudge

SECRET = "bench-serve-secret-" + "b" * 32


def _load(
    client: httpx.Client, requests: Sequence[Callable[[httpx.Client], int]], concurrency: int
) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    codes: list[int] = []
    lock = threading.Lock()

    def one(request: Callable[[httpx.Client], int]) -> None:
        started = time.perf_counter()
        code = request(client)
        took = time.perf_counter() - started
        with lock:
            latencies.append(took)
            codes.append(code)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, requests))
    return time.perf_counter() - started, latencies, codes


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else 0.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_serve", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--customers", type=int, default=2000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        warehouse = tmp / "warehouse.duckdb"
        end = this_hour()
        generate_to_file(warehouse, customers=args.customers, end=end)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "DAGSTER_"))}
        env.update(
            NUDGE_WAREHOUSE=str(warehouse),
            NUDGE_OUTBOX_DIR=str(tmp / "outbox"),
            NUDGE_LINK_SECRET=SECRET,
            NUDGE_PUBLIC_URL=f"http://127.0.0.1:{port}",
            DAGSTER_HOME=str(tmp / "dagster_home"),
        )
        links = LinkSettings.build(public_url=env["NUDGE_PUBLIC_URL"], secret=SECRET)
        server = nudge("serve", "--port", str(port), env=env, quiet=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url + "/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

            stop = threading.Event()
            ticks = 0

            def tick_loop() -> None:
                nonlocal ticks
                hour = 0
                while not stop.is_set():
                    hour += 1
                    as_of = (end + timedelta(hours=hour)).isoformat()
                    nudge("run", "--as-of", as_of, env=env, quiet=True).wait()
                    ticks += 1

            ticker = threading.Thread(target=tick_loop, daemon=True)
            limits = httpx.Limits(max_connections=args.concurrency)
            with httpx.Client(base_url=url, limits=limits, timeout=30) as client:
                base_s, base_lat, base_codes = _load(
                    client,
                    [lambda c: c.get("/healthz").status_code] * args.requests,
                    args.concurrency,
                )
                paths = [
                    links.unsubscribe_url(f"bench_{i}", "marketing", f"s{i}").removeprefix(url)
                    for i in range(args.requests)
                ]
                ticker.start()
                body = {"List-Unsubscribe": "One-Click"}
                load_s, lat, codes = _load(
                    client,
                    [(lambda c, p=p: c.post(p, data=body).status_code) for p in paths],
                    args.concurrency,
                )
            stop.set()
            ticker.join()
        finally:
            server.terminate()
            server.wait(timeout=10)
        # A last tick drains what is left.
        nudge("run", "--as-of", (end + timedelta(hours=99)).isoformat(), env=env, quiet=True).wait()
        con = duckdb.connect(str(warehouse), read_only=True)
        stored = con.execute(
            "select count(*), count(distinct customer_id) from nudge.consent_changes"
            " where customer_id like 'bench_%'"
        ).fetchone()
        con.close()

    assert base_codes.count(200) == len(base_codes)
    ok = codes.count(200)
    print(f"{args.requests} one-click POSTs, {args.concurrency} at a time, {ticks} ticks meanwhile")
    print(f"{'':24}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'GET /healthz (baseline)':24}{len(base_lat) / base_s:>12.0f}"
          f"{_p(base_lat, 50):>10.1f}{_p(base_lat, 99):>10.1f}")  # fmt: skip
    print(f"{'POST /u/<token>':24}{len(lat) / load_s:>12.0f}"
          f"{_p(lat, 50):>10.1f}{_p(lat, 99):>10.1f}")  # fmt: skip
    print(f"ratio to baseline: {(len(lat) / load_s) / (len(base_lat) / base_s):.2f}")
    print(f"answered 200: {ok}; in the warehouse: {stored[0]} changes for {stored[1]} customers")
    if not (ok == args.requests == stored[0] == stored[1]):
        raise SystemExit("FAILED: not every acknowledged unsubscribe is in the warehouse once")


if __name__ == "__main__":
    main()
