"""Provider event webhooks under load while ticks run: ``python -m tests.bench.bench_webhooks``.

    python -m tests.bench.bench_webhooks [--events 100000] [--batch 500] [--concurrency 8]
                                         [--customers 2000] [--spread SECONDS]

A real ``nudge serve`` process on loopback takes ``--events`` SendGrid events (each with its
own ``sg_event_id``; their send_ids need not exist) in signed batches of ``--batch`` (SendGrid
batches its Event Webhook; 500 events is a few hundred KB, the size it posts), from a pool
of ``--concurrency`` clients, while real ticks (``nudge run``: the drain, dbt and the send
step) run back to back on a demo warehouse and drain the landing store. One batch in a
hundred is posted again a little later, as SendGrid does when it thinks a delivery failed.
As fast as the service answers, the load is over within a tick's start-up, so no tick drains
while batches arrive; ``--spread 150`` paces the batches over two and a half minutes so they do
(``make bench-webhooks`` runs both). Then a last tick drains the rest, and the bench checks
that the warehouse holds every event exactly once: every acknowledged event must reach
``nudge.email_events``, and no retry may add a row.

Reported: events/s, batches/s, p50 and p99 latency of one batch POST (ECDSA verification,
JSON parsing, one fsynced SQLite transaction), and the same for ``GET /healthz`` on the same
server in the same run: the baseline (no body, no signature, no fsync), so the ratio says
what a batch costs on this machine, whatever its speed.
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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from dagster_project.clock import this_hour
from dagster_project.demo_data import generate_to_file
from dagster_project.landing import LandingStore
from dagster_project.serve.app import MAX_WEBHOOK_BYTES
from tests.support.processes import free_port, nudge
from tests.support.webhook_signing import json_body, sendgrid_event, sendgrid_keypair, sign_sendgrid

SECRET = "bench-webhooks-secret-" + "w" * 32
# A realistic mix: mostly deliveries and engagement, a few bounces and deferrals.
KINDS = ("delivered", "open", "delivered", "click", "delivered", "open", "bounce", "deferred")
RETRY_EVERY = 100  # one batch in a hundred is delivered twice
# `nudge run` exit codes of a tick that ran (and so drained): 0, or 3 when a guard held a
# trigger (the demo's events age as the bench moves the clock on).
TICK_RAN = (0, 3)


@dataclass(frozen=True)
class Answer:
    """What the server said to one request."""

    code: int
    new: int = 0


Request = Callable[[httpx.Client], Answer]


def _load(
    client: httpx.Client, requests: Sequence[Request], concurrency: int, spread: float = 0.0
) -> tuple[float, list[float], list[Answer]]:
    """Run ``requests`` from ``concurrency`` threads; (wall seconds, latencies, answers).
    With ``spread`` seconds, request i starts no earlier than i / n of it (paced)."""
    latencies: list[float] = []
    answers: list[Answer] = []
    lock = threading.Lock()
    begin = time.perf_counter()

    def one(item: tuple[int, Request]) -> None:
        index, request = item
        if spread:
            time.sleep(max(0.0, begin + spread * index / len(requests) - time.perf_counter()))
        started = time.perf_counter()
        answer = request(client)
        took = time.perf_counter() - started
        with lock:
            latencies.append(took)
            answers.append(answer)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, enumerate(requests)))
    return time.perf_counter() - begin, latencies, answers


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else 0.0


def _bodies(events: int, batch: int, run: str) -> list[bytes]:
    """The batches' JSON bodies, built before the clock starts (the bench times the server,
    not the client's JSON encoding)."""
    occurred = time.time()
    bodies = []
    for start in range(0, events, batch):
        items = [
            sendgrid_event(
                KINDS[i % len(KINDS)],
                email=f"bench{i % 20_000}@example.com",
                send_id=f"bench-send-{i}",
                timestamp=occurred,
                sg_event_id=f"bench-{run}-{i:07d}",
            )
            for i in range(start, min(start + batch, events))
        ]
        body = json_body(items)
        if len(body) > MAX_WEBHOOK_BYTES:
            raise SystemExit(f"--batch {batch} makes {len(body)} byte bodies, over the limit")
        bodies.append(body)
    return bodies


def _schedule(bodies: list[bytes], concurrency: int) -> list[bytes]:
    """Every batch once, and every RETRY_EVERY-th again a few rounds of the pool later: a
    retry arrives while other batches (and a tick) are in flight, as SendGrid's do."""
    order = list(bodies)
    later = 3 * concurrency
    for n, i in enumerate(range(0, len(bodies), RETRY_EVERY)):
        order.insert(min(i + later + n + 1, len(order)), bodies[i])
    return order


def _poster(key: ec.EllipticCurvePrivateKey, body: bytes) -> Request:
    def post(client: httpx.Client) -> Answer:
        # Signed when sent, as SendGrid does: the server refuses timestamps over 300 s old.
        headers = {"Content-Type": "application/json"}
        headers.update(sign_sendgrid(key, body, time.time()))
        response = client.post("/webhooks/sendgrid", headers=headers, content=body)
        new = response.json()["new"] if response.status_code == 200 else 0
        return Answer(response.status_code, int(new))

    return post


def _healthz(client: httpx.Client) -> Answer:
    return Answer(client.get("/healthz").status_code)


def _row(name: str, seconds: float, latencies: list[float], events: int | None) -> str:
    rate = len(latencies) / seconds
    per_event = f"{events / seconds:>12.0f}" if events is not None else f"{'':>12}"
    return f"{name:28}{rate:>12.0f}{per_event}{_p(latencies, 50):>10.1f}{_p(latencies, 99):>10.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_webhooks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="pace the batches over this many seconds, so ticks drain while they arrive "
        "(0: as fast as the service answers, for throughput)",
    )
    args = parser.parse_args(argv)

    key, public_key = sendgrid_keypair()
    run = f"{int(time.time()):x}"
    bodies = _bodies(args.events, args.batch, run)
    schedule = _schedule(bodies, args.concurrency)

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
            NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY=public_key,
            DAGSTER_HOME=str(tmp / "dagster_home"),
        )
        server = nudge("serve", "--port", str(port), env=env, quiet=True)
        url = f"http://127.0.0.1:{port}"
        ticks: list[int] = []  # exit codes
        tick_seconds: list[float] = []
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

            def tick_loop() -> None:
                hour = 0
                while not stop.is_set():
                    hour += 1
                    as_of = (end + timedelta(hours=hour)).isoformat()
                    started = time.perf_counter()
                    ticks.append(nudge("run", "--as-of", as_of, env=env, quiet=True).wait())
                    tick_seconds.append(time.perf_counter() - started)

            ticker = threading.Thread(target=tick_loop, daemon=True)
            limits = httpx.Limits(max_connections=args.concurrency)
            with httpx.Client(base_url=url, limits=limits, timeout=60) as client:
                base_s, base_lat, base_answers = _load(
                    client, [_healthz] * max(len(schedule), 2000), args.concurrency
                )
                ticker.start()
                load_s, lat, answers = _load(
                    client,
                    [_poster(key, body) for body in schedule],
                    args.concurrency,
                    args.spread,
                )
            stop.set()
            ticker.join()
        finally:
            server.terminate()
            server.wait(timeout=10)
        # How much the ticks that overlapped the load drained: 0 means they never reached
        # their drain while batches were arriving (a small --events posts within a tick's
        # start-up), and the figures are for the service beside a busy machine only.
        con = duckdb.connect(str(warehouse), read_only=True)
        during = con.execute(
            "select count(*) from nudge.email_events where event_id like ?",
            [f"sendgrid:bench-{run}-%"],
        ).fetchone()
        con.close()
        # A last tick drains what is left, an hour after the last one (never back in time).
        as_of = (end + timedelta(hours=len(ticks) + 1)).isoformat()
        last = nudge("run", "--as-of", as_of, env=env)
        out, err = last.communicate()
        if last.returncode not in TICK_RAN:
            raise SystemExit(f"FAILED: the last tick failed ({last.returncode}):\n{out}\n{err}")
        con = duckdb.connect(str(warehouse), read_only=True)
        stored = con.execute(
            "select count(*), count(distinct event_id) from nudge.email_events"
        ).fetchone()
        ours = con.execute(
            "select count(*), count(distinct event_id) from nudge.email_events"
            " where event_id like ?",
            [f"sendgrid:bench-{run}-%"],
        ).fetchone()
        con.close()
        store = LandingStore(Path(f"{warehouse}.landing.sqlite"))
        left = len(store.undrained_events())
        store.close()

    assert [a.code for a in base_answers] == [200] * len(base_answers)
    ok = sum(a.code == 200 for a in answers)
    new = sum(a.new for a in answers)
    retries = len(schedule) - len(bodies)
    print(
        f"{args.events} SendGrid events in {len(bodies)} signed batches of {args.batch}"
        f" (+{retries} redelivered), {args.concurrency} clients,"
        f" {len(ticks)} ticks meanwhile ({sum(t in TICK_RAN for t in ticks)} ran to the end)"
    )
    print(f"{'':28}{'requests/s':>12}{'events/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    print(_row("GET /healthz (baseline)", base_s, base_lat, None))
    # Events carried, retries included: the server verified, parsed and looked up each.
    carried = args.events + sum(
        min(args.batch, args.events - i) for i in range(0, args.events, args.batch * RETRY_EVERY)
    )
    print(_row("POST /webhooks/sendgrid", load_s, lat, carried))
    print(
        f"ratio of requests/s to the baseline: {(len(lat) / load_s) / (len(base_lat) / base_s):.3f}"
    )
    print(
        f"answered 200: {ok}/{len(schedule)}; new events acknowledged: {new};"
        f" in the warehouse: {stored[0]} rows, {stored[1]} distinct event_ids"
        f" ({ours[0]} of this run); left undrained: {left}"
    )
    print(
        f"the load took {load_s:.1f} s; the ticks {', '.join(f'{t:.0f}' for t in tick_seconds)} s;"
        f" drained by the ticks that overlapped it: {during[0] if during else 0}"
    )
    # "new" is new to the landing store: a redelivery after a tick drained (and the store
    # dropped) an open or a click is stored again there, and the warehouse keeps it once.
    if not (ok == len(schedule) and new >= args.events and left == 0):
        raise SystemExit("FAILED: a batch was refused, or an event was never acknowledged")
    if not (tuple(stored) == tuple(ours) == (args.events, args.events)):
        raise SystemExit("FAILED: not every acknowledged event is in the warehouse exactly once")


if __name__ == "__main__":
    main()
