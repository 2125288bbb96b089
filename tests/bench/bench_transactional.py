"""Transactional latency, event to provider: ``python -m tests.bench.bench_transactional``.

    python -m tests.bench.bench_transactional [--customers 20000] [--orders 3] [--keep]

On a generated warehouse (``--customers``) with a steady ledger (an hourly tick at ``END``
has sent the backlog), new orders land at ``END`` + 1 minute, and the transactional job the
5-minute schedule launches runs at ``END`` + 5 minutes, as ``nudge run --transactional``: a
real process (imports, Dagster, one dbt build of the transactional models, the sends) against
Postmark's batch API on a loopback server. Then the hourly tick runs at ``END`` + 1 hour, the
baseline measured in the same run on the same machine.

Printed, as one Markdown table:

* the run's wall time, and from its start to the provider receiving each order's confirmation;
* latency from the event to the provider: the wait for the next 5-minute mark (4 minutes here,
  at most 5) plus the run's own time until the request;
* the hourly tick's wall time, and the ratio transactional / hourly.

Honesty checks: each new order's confirmation reached the provider exactly once and no other
order's did. The file is named ``bench_*`` so pytest never collects it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster_project import ledger
from dagster_project.demo_data import generate_to_file
from dagster_project.warehouse import connection
from tests.bench.summary import Figure, record
from tests.support.esp_server import EspServer

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TOKEN = "pm-bench-token"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_transactional", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--orders", type=int, default=3, help="orders placed at END + 1 min")
    parser.add_argument("--keep", action="store_true", help="keep the warehouse, print its path")
    parser.add_argument(
        "--summary", type=Path, help="append the headline figures here (tests/bench/summary.py)"
    )
    return parser.parse_args(argv)


def _nudge(*args: str, env: dict[str, str]) -> tuple[float, float, str]:
    """``nudge ARGS``: (monotonic start, wall seconds, stdout); fails loudly on a failed run."""
    started = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("nudge")), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"nudge {' '.join(args)} failed:\n{result.stdout[-3000:]}")
    return started, seconds, result.stdout


def _place_orders(warehouse: Path, n: int, at: datetime) -> list[str]:
    """``n`` orders by existing customers at ``at``; their order ids."""
    with connection(warehouse) as con:
        customers = [
            row[0]
            for row in con.execute(
                "select customer_id from raw.customers where email like '%@%.%'"
                " order by customer_id limit ?",
                [n],
            ).fetchall()
        ]
        orders = [f"bench_order_{i}" for i in range(len(customers))]
        con.executemany(
            "insert into raw.events values (?, ?, 'order_completed', ?, ?)",
            [
                (
                    f"bench_event_{i}",
                    customer,
                    at,
                    json.dumps(
                        {
                            "order_id": order,
                            "revenue": 42.0,
                            "currency": "USD",
                            "products": [
                                {"product_id": "p1", "name": "Mug", "price": 21.0, "quantity": 2}
                            ],
                        }
                    ),
                )
                for i, (customer, order) in enumerate(zip(customers, orders, strict=True))
            ],
        )
    return orders


def _confirmations(server: EspServer, orders: Sequence[str]) -> dict[str, list[float]]:
    """Arrival times (monotonic) of each order's confirmation at the provider."""
    wanted = set(orders)
    seen: dict[str, list[float]] = {order: [] for order in orders}
    for request in server.send_requests():
        for message in request.body:
            subject = str(message.get("Subject", ""))
            for order in wanted:
                if message.get("Tag") == "order_confirmation" and f"Order {order} " in subject:
                    seen[order].append(request.received_at)
    return seen


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'figure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nudge-bench-transactional-") as tmp:
        folder = Path(tmp)
        warehouse = folder / "warehouse.duckdb"
        print(f"generating {args.customers:,} customers ...", file=sys.stderr)
        generate_to_file(warehouse, customers=args.customers, end=END)
        with connection(warehouse) as con:
            ledger.ensure_ledger(con)
        with EspServer(api_key=TOKEN) as server:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "DAGSTER"))},
                "NUDGE_WAREHOUSE": str(warehouse),
                "DAGSTER_HOME": str(folder / "dagster_home"),
                "NUDGE_ESP": "postmark",
                "NUDGE_ESP_BASE_URL": server.url,
                "NUDGE_ESP_API_KEY": TOKEN,
                "NUDGE_LINK_SECRET": "bench-link-secret-" + "k" * 32,
                "NUDGE_PUBLIC_URL": "https://nudge.shop.example",
                # The first tick sends a fresh ledger's backlog on purpose: not a mass send.
                "NUDGE_MASS_SEND_MAX": str(10**9),
            }
            print("hourly tick at END (sends the backlog; untimed) ...", file=sys.stderr)
            _nudge("run", "--as-of", END.isoformat(), "--allow-late", env=env)
            placed_at = END + timedelta(minutes=1)
            scheduled = END + timedelta(minutes=5)
            orders = _place_orders(warehouse, args.orders, placed_at)
            print("transactional run at END + 5 min ...", file=sys.stderr)
            started, transactional_s, _ = _nudge(
                "run", "--transactional", "--as-of", scheduled.isoformat(), "--allow-late",
                env=env,
            )  # fmt: skip
            arrivals = _confirmations(server, orders)
            print("hourly tick at END + 1 h (the baseline) ...", file=sys.stderr)
            _, hourly_s, _ = _nudge(
                "run", "--as-of", (END + timedelta(hours=1)).isoformat(), "--allow-late", env=env,
            )  # fmt: skip
            after_hourly = _confirmations(server, orders)
        if args.keep:
            kept = Path(tempfile.mkdtemp(prefix="nudge-bench-kept-")) / "warehouse.duckdb"
            kept.write_bytes(warehouse.read_bytes())
            print(f"warehouse kept at {kept}", file=sys.stderr)

    missing = [o for o, at in arrivals.items() if len(at) != 1]
    resent = [o for o, at in after_hourly.items() if len(at) != 1]
    if missing or resent:
        raise SystemExit(f"not confirmed exactly once: {missing or resent}")
    to_provider = max(at[0] for at in arrivals.values()) - started
    wait = (scheduled - placed_at).total_seconds()
    size = f"{args.customers:,} customers"
    record(
        args.summary,
        Figure(
            "transactional",
            f"transactional run, wall, {size}",
            transactional_s,
            "s",
            "the hourly tick, wall",
            hourly_s,
        ),
    )
    record(
        args.summary,
        Figure(
            "transactional",
            f"order event -> provider (placed 4 min before the run), {size}",
            wait + to_provider,
            "s",
        ),
    )
    print(
        _table(
            [
                ("customers", f"{args.customers:,}"),
                ("orders placed at END + 1 min", str(len(orders))),
                ("transactional run, wall", f"{transactional_s:.1f} s"),
                ("run start -> provider got the last confirmation", f"{to_provider:.1f} s"),
                (
                    "event -> provider (4 min to the 5-minute mark + run)",
                    f"{wait + to_provider:.0f} s",
                ),
                ("worst case (5 min + run)", f"{300 + to_provider:.0f} s"),
                ("hourly tick, wall (baseline)", f"{hourly_s:.1f} s"),
                ("transactional / hourly", f"{transactional_s / hourly_s:.2f}x"),
            ]
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
