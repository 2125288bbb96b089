"""Push throughput of nudge's send step against the bare provider: ``python -m tests.bench_push``.

    python -m tests.bench_push [--sends 3000] [--provider sendgrid] [--repeat 3]

Both sides push the same rendered messages to the same local sink, which runs in a child
process so its handler threads do not share this process's GIL:

* **provider alone**: ``provider.send`` on batches of pre-rendered messages: the HTTP cost;
* **nudge**: ``dispatch_trigger`` on an eligibility table of the same size: planning, rendering,
  the consent and quiet-hours re-checks, the hand-over journal and the ledger settles.

The figure to quote is the ratio (nudge / provider alone), measured in the same run: these
machines are noisy, and the ratio says what nudge's own bookkeeping costs on top of the wire.
The best of ``--repeat`` runs is reported for each side.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dagster_project import ledger
from dagster_project.dispatch import dispatch_trigger, render_batch
from dagster_project.policy import DispatchPolicy, GuardPolicy
from dagster_project.providers import Provider
from dagster_project.rendering import Renderer
from dagster_project.warehouse import connect
from tests.support.factories import AS_OF, CART_SPEC, cart_row, write_eligibility

API_KEY = "SG.bench-push-key"
FROM = "shop@example.com"


def _serve(
    ready: multiprocessing.synchronize.Event, port: multiprocessing.sharedctypes.Synchronized
) -> None:  # type: ignore[name-defined]
    from tests.support.esp_server import EspServer

    server = EspServer(api_key=API_KEY).start()
    port.value = int(server.url.rsplit(":", 1)[1])
    ready.set()
    while True:
        time.sleep(3600)


def _provider(name: str, url: str, concurrency: int) -> Provider:
    if name == "sendgrid":
        from dagster_project.providers.sendgrid import SendGridProvider

        return SendGridProvider(API_KEY, url, max_concurrency=concurrency, max_attempts=2)
    if name == "postmark":
        from dagster_project.providers.postmark import PostmarkProvider

        return PostmarkProvider(API_KEY, base_url=url, max_concurrency=concurrency)
    raise SystemExit(f"unknown provider {name}")


def _warehouse(folder: Path, sends: int, tag: str) -> Path:
    path = folder / f"{tag}.duckdb"
    con = connect(path)
    try:
        ledger.ensure_ledger(con)
        write_eligibility(con, [cart_row(f"{tag}-{i:06d}") for i in range(sends)])
    finally:
        con.close()
    return path


def _nudge_run(folder: Path, args: argparse.Namespace, url: str, tag: str) -> float:
    path = _warehouse(folder, args.sends, tag)
    provider = _provider(args.provider, url, args.concurrency)
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
                batch_size=args.batch_size, guards=GuardPolicy(mass_send_max=10**9)
            ),
        )
        took = time.perf_counter() - started
    finally:
        con.close()
        provider.close()
    if summary.sent != args.sends:
        raise SystemExit(f"nudge sent {summary.sent} of {args.sends}: {summary.errors[:3]}")
    return args.sends / took


def _provider_run(args: argparse.Namespace, url: str) -> float:
    rows = [cart_row(f"bare-{i:06d}") for i in range(args.sends)]
    import json

    contexts = [(r["send_id"], json.dumps(r, default=str)) for r in rows]
    messages, failures = render_batch(CART_SPEC, Renderer(), contexts, FROM)
    assert not failures, failures[:1]
    provider = _provider(args.provider, url, args.concurrency)
    try:
        started = time.perf_counter()
        sent = 0
        for i in range(0, len(messages), args.batch_size):
            results = provider.send(messages[i : i + args.batch_size])
            sent += sum(r.status == "sent" for r in results)
        took = time.perf_counter() - started
    finally:
        provider.close()
    if sent != args.sends:
        raise SystemExit(f"the provider sent {sent} of {args.sends}")
    return args.sends / took


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_push", description=__doc__)
    parser.add_argument("--sends", type=int, default=3000)
    parser.add_argument("--provider", default="sendgrid", choices=["sendgrid", "postmark"])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    ready = multiprocessing.Event()
    port = multiprocessing.Value("i", 0)
    sink = multiprocessing.Process(target=_serve, args=(ready, port), daemon=True)
    sink.start()
    if not ready.wait(30):
        raise SystemExit("the sink did not start")
    url = f"http://127.0.0.1:{port.value}"
    bare: list[float] = []
    nudge: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="nudge-bench-push-") as folder:
            for i in range(args.repeat):
                bare.append(_provider_run(args, url))
                nudge.append(_nudge_run(Path(folder), args, url, f"run{i}"))
    finally:
        sink.terminate()
    best_bare, best_nudge = max(bare), max(nudge)
    print(
        f"| {args.provider}, {args.sends} sends, batch {args.batch_size}, "
        f"concurrency {args.concurrency} | messages/s |\n| --- | --- |\n"
        f"| provider alone (best of {args.repeat}) | {best_bare:,.0f} |\n"
        f"| nudge dispatch_trigger (best of {args.repeat}) | {best_nudge:,.0f} |\n"
        f"| ratio nudge / provider alone | {best_nudge / best_bare:.2f} |\n"
        f"| medians: provider {statistics.median(bare):,.0f}, nudge "
        f"{statistics.median(nudge):,.0f} | |"
    )


if __name__ == "__main__":
    main()
