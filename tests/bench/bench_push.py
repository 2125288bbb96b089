"""Push throughput against the peer drt, on the same rows and the same sink: ``make bench-push``.

    python -m tests.bench.bench_push [--sends 5000] [--repeat 3] [--concurrency 8]

Every figure is messages per second through one local sink (``tests/support/fast_sink.py``, an
asyncio server in a child process that answers SendGrid, Postmark and Resend), measured in this
run, best of ``--repeat``:

* **drt** (``drt-core``, its SendGrid destination: one request per row on a sequential sync
  client, pacing off): the baseline every ratio is taken against;
* **nudge** ``dispatch_trigger`` on an eligibility table of ``--sends`` carts: plan, render,
  the consent and quiet-hours re-checks, the hand-over journal, the send and the ledger
  settles, through SendGrid (one message per request, 8 connections), SendGrid template mode
  (1,000 per request), Postmark (batches of 500) and Resend (batches of 100);
* **nudge's HTTP client alone** (``providers/wire.py``, what every HTTP adapter posts through):
  the SendGrid lane's request bodies, built beforehand, posted in a loop on one connection
  and then by ``--concurrency`` threads, with none of nudge's other work. One process cannot
  post faster than this, so it is the ceiling of the one-message-per-request lane: the part
  of that lane's time nudge's own work (render, journal, settles) can still win back;
* **rendering** alone (``compose.render_batch``: context, links, three templates), the part
  of nudge's push that is pure CPU: in one process, then split across the worker processes a
  push of 1,000 emails or more uses (``render_workers.py``, ``--render-processes``).

The sink counts the messages it accepted and how many were distinct: a run that lost or
doubled one fails the bench rather than print a figure. drt is an optional dependency of the
bench only (``pip install drt-core``); without it the table says so and the ratios are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dagster_project import ledger
from dagster_project.compose import Rendered, render_batch
from dagster_project.dispatch import dispatch_trigger
from dagster_project.links import LinkSettings
from dagster_project.policy import DispatchPolicy, GuardPolicy
from dagster_project.providers import Provider
from dagster_project.providers.sendgrid import build_sendgrid_payload
from dagster_project.providers.wire import WireClient
from dagster_project.render_workers import RenderWorkers
from dagster_project.rendering import Renderer
from dagster_project.warehouse import connect
from tests.bench.summary import Figure, record
from tests.support.factories import AS_OF, CART_SPEC, cart_row, write_eligibility
from tests.support.fast_sink import FastSink

API_KEY = "SG.bench-push-key"
FROM = "shop@example.com"


@dataclass(frozen=True)
class Lane:
    """One way of pushing: a label, the provider it builds and the dispatch batch size (None:
    the provider's default, what a user gets without setting ``batch_size``)."""

    label: str
    build: Callable[[str, int], Provider]
    batch_size: int | None = None


def _sendgrid(template_id: str | None) -> Callable[[str, int], Provider]:
    def build(url: str, concurrency: int) -> Provider:
        from dagster_project.providers.sendgrid import SendGridProvider

        return SendGridProvider(
            API_KEY, url, max_concurrency=concurrency, max_attempts=2, template_id=template_id
        )

    return build


def _postmark(url: str, concurrency: int) -> Provider:
    from dagster_project.providers.postmark import PostmarkProvider

    return PostmarkProvider(API_KEY, base_url=url, max_concurrency=concurrency)


def _resend(url: str, concurrency: int) -> Provider:
    from dagster_project.providers.resend import ResendProvider

    # Resend's documented default is 2 requests/s; a local sink has no such limit.
    return ResendProvider(
        "re_bench_key", base_url=url, max_concurrency=concurrency, requests_per_second=1000
    )


LANES = (
    Lane("SendGrid, one message per request", _sendgrid(None)),
    Lane("SendGrid template mode, 1,000 per request", _sendgrid("d-bench")),
    Lane("Postmark batch, 500 per request", _postmark),
    Lane("Resend batch, 100 per request", _resend),
)


def _check(sink: FastSink, before: dict[str, int], sends: int, who: str) -> None:
    after = sink.stats()
    messages = after["messages"] - before["messages"]
    distinct = after["distinct"] - before["distinct"]
    if messages != sends or distinct != sends:
        raise SystemExit(
            f"{who}: the sink got {messages} messages, {distinct} distinct, of {sends}"
        )


def drt_rate(sink: FastSink, sends: int) -> float | None:
    """drt's SendGrid destination on ``sends`` rows; None when drt-core is not installed."""
    try:
        import drt.destinations.sendgrid as drt_sendgrid
        from drt.config.models import SendGridDestinationConfig, SyncOptions
    except ImportError:
        return None
    # drt posts to SendGrid's fixed address: point it at the sink, the one change made to it.
    setattr(drt_sendgrid, "_SENDGRID_API_URL", f"{sink.url}/v3/mail/send")  # noqa: B010
    os.environ["NUDGE_BENCH_DRT_KEY"] = API_KEY
    config = SendGridDestinationConfig(
        type="sendgrid",
        from_email=FROM,
        subject_template="{{ row.first_name }}, your cart is waiting",
        body_template="Hi {{ row.first_name }}, you left {{ row.item_count }} items: "
        "{{ row.cart_url }}",
        auth={"type": "bearer", "token_env": "NUDGE_BENCH_DRT_KEY"},
    )
    # drt paces at 10 requests/s unless told otherwise; the issue measured it unpaced.
    options = SyncOptions(rate_limit={"requests_per_second": 0})
    tag = f"drt{time.monotonic_ns()}"
    rows = [cart_row(f"{tag}-{i:06d}") for i in range(sends)]
    before = sink.stats()
    started = time.perf_counter()
    result = drt_sendgrid.SendGridDestination().load(rows, config, options)
    took = time.perf_counter() - started
    if result.success != sends:
        raise SystemExit(f"drt sent {result.success} of {sends}")
    _check(sink, before, sends, "drt")
    return sends / took


def nudge_rate(
    sink: FastSink,
    folder: Path,
    lane: Lane,
    sends: int,
    concurrency: int,
    tag: str,
    render_processes: int = DispatchPolicy().render_processes,
) -> float:
    path = folder / f"{tag}.duckdb"
    con = connect(path)
    try:
        ledger.ensure_ledger(con)
        write_eligibility(con, [cart_row(f"{tag}-{i:06d}") for i in range(sends)])
    finally:
        con.close()
    provider = lane.build(sink.url, concurrency)
    before = sink.stats()
    con = connect(path)
    try:
        started = time.perf_counter()
        summary = dispatch_trigger(
            con,
            CART_SPEC,
            provider=provider,
            renderer=Renderer(),
            as_of=AS_OF,
            run_id=tag,
            from_email=FROM,
            policy=DispatchPolicy(
                batch_size=lane.batch_size,
                guards=GuardPolicy(mass_send_max=10**9),
                render_processes=render_processes,
            ),
        )
        took = time.perf_counter() - started
    finally:
        con.close()
        provider.close()
    if summary.sent != sends:
        raise SystemExit(
            f"{lane.label}: nudge sent {summary.sent} of {sends}: {summary.errors[:3]}"
        )
    _check(sink, before, sends, lane.label)
    return sends / took


def client_rates(sink: FastSink, sends: int, concurrency: int) -> tuple[float, float]:
    """Messages per second of nudge's HTTP client alone posting the SendGrid lane's bodies
    (rendered and encoded beforehand, not timed): on one connection in a loop, then from
    ``concurrency`` threads with a connection each, as the lane's worker pool does."""
    renderer, links = Renderer(), LinkSettings.from_env()

    def bodies(tag: str) -> list[bytes]:
        rows = [cart_row(f"{tag}-{i:06d}") for i in range(sends)]
        contexts = [(row["send_id"], json.dumps(row, default=str)) for row in rows]
        messages, failures = render_batch(CART_SPEC, renderer, contexts, FROM, links=links)
        if failures:
            raise SystemExit(f"rendering failed: {failures[:1]}")
        return [json.dumps(build_sendgrid_payload(m)).encode("utf-8") for m in messages]

    def rate(threads: int) -> float:
        todo = bodies(f"wire{time.monotonic_ns()}")
        url = f"{sink.url}/v3/mail/send"
        client = WireClient(
            {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            timeout=30.0,
        )

        def post(body: bytes) -> None:
            if client.post(url, content=body).status_code != 202:
                raise SystemExit("the sink refused a request")

        before = sink.stats()
        try:
            started = time.perf_counter()
            if threads == 1:
                for body in todo:
                    post(body)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    for _ in pool.map(post, todo):
                        pass
            took = time.perf_counter() - started
        finally:
            client.close()
        _check(sink, before, sends, "the HTTP client alone")
        return sends / took

    return rate(1), rate(concurrency)


def render_rates(sends: int, repeat: int, processes: int) -> tuple[float, float | None]:
    """Emails rendered per second, best of ``repeat``: in this process, then split across
    ``processes`` worker processes (started beforehand, as a push starts them once; None for
    fewer than two)."""
    rows = [cart_row(f"render-{i:06d}") for i in range(sends)]
    contexts = [(row["send_id"], json.dumps(row, default=str)) for row in rows]
    renderer, links = Renderer(), LinkSettings.from_env()

    def rate(render: Callable[..., Rendered]) -> float:
        started = time.perf_counter()
        messages, failures = render(CART_SPEC, renderer, contexts, FROM, links=links)
        took = time.perf_counter() - started
        if failures or len(messages) != sends:
            raise SystemExit(f"rendering failed: {failures[:1]}")
        return sends / took

    alone = max(rate(render_batch) for _ in range(repeat))
    if processes < 2:
        return alone, None
    with RenderWorkers(processes) as workers:
        rate(workers.render)  # the workers' imports and first templates, once
        split = max(rate(workers.render) for _ in range(repeat))
    return alone, split


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_push", description=__doc__)
    parser.add_argument("--sends", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="then once more with the sink answering after this round trip (0: skip)",
    )
    parser.add_argument("--latency-sends", type=int, default=1000)
    parser.add_argument(
        "--render-processes",
        type=int,
        default=DispatchPolicy().render_processes,
        help="rendering's worker processes (NUDGE_RENDER_PROCESSES) in the lanes and the "
        "rendering rows; 0 or 1: the lanes render in-process",
    )
    parser.add_argument(
        "--summary", type=Path, help="append the headline figures here (tests/bench/summary.py)"
    )
    args = parser.parse_args(argv)

    lines = [
        "| push of carts to one local sink | messages/s | vs drt |",
        "| --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="nudge-bench-push-") as folder:
        with FastSink() as sink:
            drt, best = _lanes(
                sink,
                Path(folder),
                args.sends,
                args.repeat,
                args.concurrency,
                LANES,
                args.render_processes,
            )
            # The one-message lane's ceiling in one process, beside it: see the module doc.
            for _ in range(args.repeat):
                rates = client_rates(sink, args.sends, args.concurrency)
                for label, rate in zip(_ceiling_labels(args.concurrency), rates, strict=True):
                    best[label] = max(best.get(label, 0.0), rate)
        setting = f"{args.sends:,} carts, best of {args.repeat}"
        lines += _rows(setting, drt, best)
        _record(args.summary, setting, drt, best)
        if args.latency_ms > 0:
            # A provider across the internet: here waiting, not CPU, bounds a sequential loop,
            # and connections in parallel pay off. One repeat: latency is not noisy.
            with FastSink(delay=args.latency_ms / 1000) as sink:
                drt, best = _lanes(
                    sink,
                    Path(folder),
                    args.latency_sends,
                    1,
                    args.concurrency,
                    LANES[::2],
                    args.render_processes,
                )
            setting = f"{args.latency_sends:,} carts, {args.latency_ms:g} ms round trip"
            lines += _rows(setting, drt, best)
            _record(args.summary, setting, drt, best)
    alone, split = render_rates(args.sends, args.repeat, args.render_processes)
    workers = f"{args.render_processes} worker processes"
    lines.append(f"| nudge rendering alone, one process | {alone:,.0f} emails/s | |")
    record(args.summary, Figure("push", "rendering alone, one process", alone, "emails/s"))
    if split is not None:
        lines.append(f"| nudge rendering, {workers} | {split:,.0f} emails/s | |")
        record(
            args.summary,
            Figure("push", f"rendering, {workers}", split, "emails/s", "one process", alone),
        )
    print("\n".join(lines))


def _ceiling_labels(concurrency: int) -> tuple[str, str]:
    what = "HTTP client alone (SendGrid bodies built beforehand)"
    return f"{what}, one connection", f"{what}, {concurrency} threads"


def _record(summary: Path | None, setting: str, drt: float | None, best: dict[str, float]) -> None:
    for label, rate in best.items():
        baseline = "drt 1.2 SendGrid destination" if drt else None
        record(summary, Figure("push", f"{label}, {setting}", rate, "messages/s", baseline, drt))


def _lanes(
    sink: FastSink,
    folder: Path,
    sends: int,
    repeat: int,
    concurrency: int,
    lanes: Sequence[Lane],
    render_processes: int,
) -> tuple[float | None, dict[str, float]]:
    """drt's best rate (None without drt-core) and each lane's best, interleaved per repeat so
    a noisy minute hurts every lane alike."""
    best: dict[str, float] = {}
    drt: float | None = None
    for _ in range(repeat):
        rate = drt_rate(sink, sends)
        if rate is not None:
            drt = max(drt or 0.0, rate)
        for lane in lanes:
            tag = f"run{time.monotonic_ns()}"
            rate = nudge_rate(sink, folder, lane, sends, concurrency, tag, render_processes)
            best[lane.label] = max(best.get(lane.label, 0.0), rate)
    return drt, best


def _rows(setting: str, drt: float | None, best: dict[str, float]) -> list[str]:
    def ratio(rate: float) -> str:
        return f"{rate / drt:.2f}x" if drt else "n/a (drt-core not installed)"

    baseline = f"{drt:,.0f}" if drt else "not installed"
    rows = [f"| drt 1.2 SendGrid destination (baseline), {setting} | {baseline} | 1.00x |"]
    rows += [
        f"| nudge, {label}, {setting} | {rate:,.0f} | {ratio(rate)} |"
        for label, rate in best.items()
    ]
    return rows


if __name__ == "__main__":
    main()
