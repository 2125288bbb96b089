"""Peak memory of the demo generator as the history grows: ``python -m tests.bench.bench_generate``.

    python -m tests.bench.bench_generate [--customers 100000] [--days 30] [--times 4]

Generates the same customers twice, each in its own process: with ``--days`` of history, and
with ``--times`` as many days (sessions are drawn per ~30 days, so about that many times the
events). The generator streams its events to DuckDB in chunks, so its peak RSS should grow
with the customers, not with the history: the longer run's peak over the shorter one's is the
figure (the issue's target: within 20 %). Each child reports its own ``ru_maxrss``, so the
parent's imports and the other run are not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.bench.summary import Figure, record

END = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def _child(path: Path, customers: int, days: int) -> None:
    from dagster_project.demo_data import generate_to_file

    start = time.perf_counter()
    counts = generate_to_file(path, customers=customers, end=END, days=days)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"counts": counts, "seconds": seconds, "peak_mib": peak_mib}))


@dataclass(frozen=True)
class Run:
    days: int
    events: int
    seconds: float
    peak_mib: float


def _generate(path: Path, customers: int, days: int) -> Run:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench_generate", "--child", str(path),
         "--customers", str(customers), "--days", str(days)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return Run(days, int(result["counts"]["events"]), result["seconds"], result["peak_mib"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_generate")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--times", type=int, default=4, help="the longer history, in --days")
    parser.add_argument("--summary", type=Path, help="append the headline figures here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.customers, args.days)
        return 0

    with tempfile.TemporaryDirectory(prefix="nudge-bench-generate-") as tmp:
        short = _generate(Path(tmp) / "short.duckdb", args.customers, args.days)
        (Path(tmp) / "short.duckdb").unlink()
        long = _generate(Path(tmp) / "long.duckdb", args.customers, args.days * args.times)
    print(f"## Demo generator, {args.customers:,} customers\n")
    print("| history | days | events | seconds | events/s | peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, r in (("short", short), ("long", long)):
        rate = r.events / r.seconds
        print(
            f"| {label} | {r.days} | {r.events:,} | {r.seconds:.1f} | {rate:,.0f} "
            f"| {r.peak_mib:,.0f} |"
        )
    print(
        f"\n{long.events / short.events:.1f}x the events took "
        f"{long.peak_mib / short.peak_mib:.2f}x the peak memory."
    )
    record(
        args.summary,
        Figure(
            "generate",
            f"generator peak RSS, {args.customers:,} customers, {long.events:,} events",
            long.peak_mib,
            "MiB",
            f"the same customers with {short.events:,} events",
            short.peak_mib,
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
