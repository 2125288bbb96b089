"""Time each stage of one nudge tick at a chosen size: ``python -m tests.bench_tick``.

    python -m tests.bench_tick [--customers 20000] [--seed 7] [--push-messages 5000]
                               [--warm-up-hours 1] [--keep]

Stages, in the order a tick runs them:

1. **generate**: the synthetic warehouse (``generate_to_file``) plus ``ledger.ensure_ledger``;
2. **dbt build**: the same subprocess a tick runs, for ``as_of`` = the generator's ``end``;
3. **tick 1**: the real ``dispatch_trigger`` for every trigger (diff, plan, render, re-checks,
   push to a local :class:`~tests.support.fast_sink.FastSink` through SendGrid, journal,
   settle), timed per trigger; then **render** alone: the same sends rendered again from their
   ledger context, what rendering costs inside the tick. On a fresh ledger this tick sends the
   whole backlog still inside its grace windows (thousands at 100k customers).
   ``--warm-up-hours N`` first runs a tick every hour from N hours before ``as_of`` (the first
   on the empty ledger, reported as "first tick"), so the timed one is a steady-state tick
   that sends only what became due in its hour. N = 2 is the least for a steady dbt build: the
   first incremental build after a full one recomputes every key once.
   ``--tick-memory-limit 2GB`` caps DuckDB's memory in the timed tick (dbt's build and the
   push's connection), to measure the tick under the memory target;
4. **push (synthetic)**: ``--push-messages`` copies of a real rendered message through the same
   provider, because a steady-state tick has only a few hundred due sends even at 100k
   customers;
5. **second tick**: ``dispatch_trigger`` again at the same ``as_of``, asserting that it plans
   and sends nothing (the no-op diff every repeated tick pays);
6. **dbt build two hours later**, incremental, then the same build with ``--full-refresh``:
   what the incremental models save (README "Incremental models"). Each of the two hours
   brings an hour of new events (the generator's last hour, copied with new ids). The build an
   hour later is not timed: the first incremental build after a full one recomputes every key
   once.

The report is Markdown so it pastes into notes. There are no pass/fail targets; the only
assertions are honesty checks (every planned send reached the ESP once, the second tick is a
no-op). The file is named ``bench_*`` so pytest never collects it.

The ticks push to :class:`~tests.support.fast_sink.FastSink`, an asyncio server in a child
process, as ``bench_push`` does: a remote ESP shares neither the tick's interpreter lock nor its
CPUs, and this one still shares the CPUs, so the push time is an upper bound. (The tick pushed to
the in-process, thread-per-connection ``EspServer`` until 2026-12-06; its handler threads took
the interpreter lock from the provider's workers, and the tick's push at 1M customers ran at
about 650 messages/s where ``bench_push``'s SendGrid lane does 1,100-1,200.) The synthetic push
stage keeps ``EspServer``: it counts the keep-alive connections by client port. dbt's peak RSS
is read from ``/proc`` (Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from dagster_project import ledger
from dagster_project.compose import render_batch
from dagster_project.dbt_runner import (
    AS_OF_ENV,
    MANIFEST,
    build_args,
    dbt_executable,
    ensure_manifest,
)
from dagster_project.demo_data import generate_to_file
from dagster_project.dispatch import dispatch_trigger
from dagster_project.links import LinkSettings
from dagster_project.policy import DispatchPolicy, GuardPolicy
from dagster_project.providers import Message
from dagster_project.providers.sendgrid import SendGridProvider
from dagster_project.rendering import Renderer
from dagster_project.triggers import TriggerSpec, higher_priority, triggers_from_manifest
from dagster_project.warehouse import connect
from tests.bench.summary import Figure, record
from tests.support.esp_server import EspServer
from tests.support.fast_sink import FastSink

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FROM_EMAIL = "Nudge Bench <bench@nudge.example>"


def bench_policy(batch_size: int) -> DispatchPolicy:
    # A first tick at 100k customers sends the whole in-grace backlog: the benchmark measures
    # that on purpose, so the mass-send guard is approved out of the way.
    return DispatchPolicy(batch_size=batch_size, guards=GuardPolicy(mass_send_max=10**9))


API_KEY = "SG.bench-not-a-real-key"
RUN_1 = "bench-tick-1"
RUN_2 = "bench-tick-2"
RUN_WARM_UP = "bench-warm-up"


def _peak_rss_mib() -> float:
    """This process's peak RSS so far; ``ru_maxrss`` is KiB on Linux and bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class Stage:
    """One row of the report: wall time and rows handled, summed over triggers where relevant."""

    name: str
    unit: str
    seconds: float = 0.0
    rows: int = 0
    peak_rss_mib: float = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
            self.peak_rss_mib = _peak_rss_mib()

    @property
    def rate(self) -> str:
        if not self.rows or self.seconds <= 0:
            return "-"
        return f"{self.rows / self.seconds:,.0f}"


@dataclass
class TriggerRun:
    """What tick 1 did for one trigger."""

    spec: TriggerSpec
    candidates: int = 0
    eligible: int = 0
    planned: int = 0
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


@dataclass
class SecondTick:
    trigger: str
    seconds: float
    candidates: int
    new: int
    already_sent: int


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench_tick", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=30, help="browsing window of the generator")
    parser.add_argument(
        "--push-messages", type=int, default=5000, help="messages in the synthetic push stage"
    )
    parser.add_argument("--batch-size", type=int, default=500, help="as dispatch_trigger's")
    parser.add_argument("--concurrency", type=int, default=8, help="SendGrid max_concurrency")
    parser.add_argument(
        "--warm-up-hours",
        type=int,
        default=0,
        help="first run a tick every hour from this many hours before as_of, so the measured "
        "tick is a steady-state one instead of a fresh ledger's backlog (2 or more for a steady "
        "dbt build)",
    )
    parser.add_argument(
        "--tick-memory-limit",
        help="DuckDB memory_limit for the timed tick only (dbt's build and the push), e.g. 2GB",
    )
    parser.add_argument(
        "--tick-dbt-threads",
        type=int,
        help="dbt threads (NUDGE_DBT_THREADS) for the timed tick's build only; they share the "
        "memory limit",
    )
    parser.add_argument(
        "--skip-full-refresh",
        action="store_true",
        help="skip the last stage, the same build with --full-refresh (the incremental models' "
        "baseline): at 50M events it is a quarter of an hour",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary warehouse and print its path"
    )
    parser.add_argument(
        "--summary", type=Path, help="append the headline figures here (tests/bench/summary.py)"
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


def _bare_scan_seconds(warehouse: Path) -> float:
    """The floor a tick is measured against: DuckDB reading what the hourly models must read
    of the events (each customer's newest event), best of three, nothing else."""
    best = float("inf")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for _ in range(3):
            started = time.perf_counter()
            con.execute(
                "select count(*) from (select customer_id, max(occurred_at) "
                "from raw.events group by customer_id)"
            ).fetchall()
            best = min(best, time.perf_counter() - started)
    return best


def _generate(warehouse: Path, args: argparse.Namespace, stage: Stage) -> dict[str, int]:
    with stage.timed():
        counts = generate_to_file(
            warehouse, customers=args.customers, end=END, days=args.days, seed=args.seed
        )
        con = connect(warehouse)
        try:
            ledger.ensure_ledger(con)
        finally:
            con.close()
    stage.rows = sum(counts.values())
    return counts


def _vm_hwm_mib(pid: int) -> float | None:
    """A live process's own peak RSS (Linux ``VmHWM``); None where /proc is not available.

    ``RUSAGE_CHILDREN`` cannot measure dbt: a child's ``ru_maxrss`` includes the parent's RSS
    it inherited at fork time, so it reports this (large) process instead of dbt.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class DbtRun:
    results: dict[str, Any]  # dbt's run_results.json, or {} when it is not this run's
    partial_parse: bool
    peak_rss_mib: float | None


def _reset_own_peak_rss() -> bool:
    """Start this process's ``VmHWM`` over (Linux: ``clear_refs`` 5), so a later reading is the
    peak of what ran since; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _dbt_build(
    warehouse: Path,
    as_of: datetime,
    stage: Stage,
    *,
    full_refresh: bool = False,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> DbtRun:
    """Run the tick's ``dbt build`` exactly as a tick does, polling dbt's peak RSS meanwhile."""
    env = {
        **os.environ,
        "NUDGE_WAREHOUSE": str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        AS_OF_ENV: as_of.isoformat(),
    }
    if memory_limit:
        env["NUDGE_DUCKDB_MEMORY_LIMIT"] = memory_limit  # dbt/profiles.yml reads it
    if threads:
        env["NUDGE_DBT_THREADS"] = str(threads)  # and this
    # The tick's own build, with run_results.json written: the table of the slowest nodes
    # reads it.
    command = [dbt_executable(), *build_args(full_refresh=full_refresh, write_json=True)]
    peak: float | None = None
    started = datetime.now(UTC)
    with stage.timed():
        proc = subprocess.Popen(
            command,
            cwd=MANIFEST.parent.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while True:
            try:
                out, err = proc.communicate(timeout=0.1)  # retrying loses no output
                break
            except subprocess.TimeoutExpired:
                # VmHWM only grows, so the last reading before exit is dbt's peak.
                peak = _vm_hwm_mib(proc.pid) or peak
    if proc.returncode != 0:
        sys.stderr.write(out[-8000:] + err[-4000:])
        raise SystemExit(f"dbt build failed with exit code {proc.returncode}")
    partial_parse = "unable to do partial parsing" not in out.lower()
    try:
        path = MANIFEST.parent / "run_results.json"
        results: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        results = {}
    # Another process may have run dbt in the same project since; only trust our own results
    # (the instant reaches dbt as an environment variable, so the results cannot name it).
    generated = str((results.get("metadata") or {}).get("generated_at") or "")
    if not generated or datetime.fromisoformat(generated.replace("Z", "+00:00")) < started:
        results = {}
    return DbtRun(results, partial_parse, peak)


def _eligibility_tables(con: duckdb.DuckDBPyConnection, as_of: datetime) -> list[tuple[Any, ...]]:
    """(table, rows, eligible, due now) for every ``audience.*_eligibility`` table."""
    tables = [
        r[0]
        for r in con.execute(
            """
            select table_name from information_schema.tables
            where table_schema = 'audience' and table_name like '%\\_eligibility' escape '\\'
            order by table_name
            """
        ).fetchall()
    ]
    out = []
    for table in tables:
        row = con.execute(
            f"""
            select
                count(*),
                count(*) filter (where is_eligible),
                count(*) filter (where is_eligible and due_at <= $as_of and $as_of <= expires_at)
            from audience."{table}"
            """,
            {"as_of": as_of},
        ).fetchone()
        assert row is not None
        out.append((f"audience.{table}", *row))
    return out


def _tick_one_trigger(
    con: duckdb.DuckDBPyConnection,
    spec: TriggerSpec,
    *,
    provider: SendGridProvider,
    renderer: Renderer,
    as_of: datetime,
    stage: Stage,
    policy: DispatchPolicy,
    competitors: Sequence[str],
) -> TriggerRun:
    """The real ``dispatch_trigger`` for one trigger, timed."""
    start = time.perf_counter()
    with stage.timed():
        summary = dispatch_trigger(
            con,
            spec,
            provider=provider,
            renderer=renderer,
            as_of=as_of,
            run_id=RUN_1,
            from_email=FROM_EMAIL,
            policy=policy,
            competitors=competitors,
        )
    assert summary.skipped_reason is None, summary.skipped_reason
    run = TriggerRun(
        spec,
        candidates=summary.candidates,
        eligible=summary.eligible,
        planned=summary.new + summary.resumed,
        sent=summary.sent,
        failed=summary.failed,
        seconds=time.perf_counter() - start,
        errors=list(summary.errors),
    )
    # Honesty: every planned row ended (sent, failed, unknown; or, taken over from an earlier
    # tick, expired or skipped at send time) or waits for the recipient's morning.
    ended = (
        summary.sent
        + summary.failed
        + summary.unknown
        + summary.expired
        + (summary.skipped - summary.skipped_at_plan)
        + summary.waiting_quiet_hours
    )
    assert ended == run.planned, (spec.name, summary.to_dict())
    stage.rows += run.sent
    return run


def _render_again(
    con: duckdb.DuckDBPyConnection,
    specs: Sequence[TriggerSpec],
    renderer: Renderer,
    stage: Stage,
    samples: list[Message],
) -> None:
    """Render tick 1's sends once more from their ledger context: rendering's share of the tick.

    With the links the push puts in them, as the push renders them: a marketing email's
    unsubscribe link, and the confirm link that confirm_subscription's templates require."""
    links = LinkSettings.from_env()
    for spec in specs:
        rows = con.execute(
            "select send_id, cast(context as varchar) from nudge.send_ledger "
            "where trigger = ? and run_id = ? and status = 'sent'",
            [spec.name, RUN_1],
        ).fetchall()
        with stage.timed():
            messages, failures = render_batch(spec, renderer, rows, FROM_EMAIL, links=links)
        assert not failures, failures[:3]
        stage.rows += len(messages)
        if messages and not samples:
            samples.append(messages[0])


def _competitors(spec: TriggerSpec, specs: Sequence[TriggerSpec]) -> list[str]:
    """The eligibility relations whose due sends win a cap slot over ``spec``'s, as the send
    assets wire them (higher-priority marketing triggers)."""
    return [other.relation for other in higher_priority(spec, specs)]


def _synthetic_messages(n: int, template: Message | None) -> list[Message]:
    if template is None:  # no trigger had a due send: a plausible ~6 KB email instead
        filler = "<p>" + "Your cart misses you. " * 250 + "</p>"
        template = Message(
            send_id="",
            trigger="bench",
            step="synthetic",
            customer_id="",
            to_email="",
            from_email=FROM_EMAIL,
            subject="A synthetic benchmark email",
            html=f"<html><body>{filler}</body></html>",
            text="Your cart misses you.\n" * 250,
        )
    out = []
    for i in range(n):
        send_id = f"bench-synthetic-{i:07d}"
        out.append(
            replace(
                template,
                send_id=send_id,
                customer_id=f"bench_{i:07d}",
                to_email=f"bench.customer.{i}@example.com",
                custom_args={"send_id": send_id, "trigger": template.trigger, "step": "bench"},
            )
        )
    return out


def _synthetic_push(
    provider: SendGridProvider,
    server: EspServer,
    messages: list[Message],
    batch_size: int,
    stage: Stage,
) -> int:
    """Send in dispatch-sized batches, provider only (no ledger); return TCP connections used."""
    server.reset()  # forget tick 1's requests (frees their recorded bodies too)
    sent = 0
    with stage.timed():
        for i in range(0, len(messages), batch_size):
            results = provider.send(messages[i : i + batch_size])
            sent += sum(r.status == "sent" for r in results)
    stage.rows = len(messages)
    requests = server.send_requests()
    server.reset()
    assert sent == len(messages), f"synthetic push: only {sent}/{len(messages)} accepted"
    assert len(requests) == len(messages), "synthetic push: retries happened"
    # One client port per keep-alive connection: at most max_concurrency if the pool is reused.
    return len({r.client_port for r in requests})


def _arrive(warehouse: Path, hour_end: datetime) -> int:
    """One more hour of events, ending at ``hour_end``: the generator's last hour copied with new
    event ids (the same customers, carts and products, so carts change and orders convert)."""
    shift = hour_end - END
    con = connect(warehouse)
    try:
        row = con.execute(
            "insert into raw.events select cast(uuid() as varchar), customer_id, event_name, "
            "occurred_at + $shift, properties from raw.events "
            "where occurred_at > $first and occurred_at <= $last",
            {"shift": shift, "first": END - timedelta(hours=1), "last": END},
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


@dataclass
class WarmUp:
    """The untimed ticks before the timed one; the first is a first tick on an empty ledger."""

    ticks: int = 0
    sent: int = 0
    first_seconds: float = 0.0
    first_sent: int = 0
    first_dbt_peak_mib: float | None = None

    @property
    def note(self) -> str:
        return (
            f"{self.ticks} warm-up tick(s), an hour apart, {self.sent:,} emails sent; the first, "
            f"on the empty ledger, took {self.first_seconds:.1f} s (dbt build + push) and sent "
            f"{self.first_sent:,}"
        )


def _warm_up(
    warehouse: Path, specs: list[TriggerSpec], as_of: datetime, args: argparse.Namespace
) -> WarmUp:
    """A tick every hour from ``--warm-up-hours`` before ``as_of``, so the timed tick is a
    steady-state one (only what became due in its hour) instead of a first tick's backlog.
    The generator's events already reach ``as_of``: each tick takes in its hour of them."""
    warm = WarmUp()
    with (
        FastSink() as sink,
        SendGridProvider(
            API_KEY, sink.url, timeout=30.0, max_concurrency=args.concurrency, max_attempts=3
        ) as provider,
    ):
        for hours_before in range(args.warm_up_hours, 0, -1):
            warm_as_of = as_of - timedelta(hours=hours_before)
            stage = Stage("warm-up", "")
            dbt = _dbt_build(warehouse, warm_as_of, stage)
            sent = 0
            con = connect(warehouse)  # closed before the next dbt build, which writes the file
            try:
                with stage.timed():
                    for spec in specs:
                        summary = dispatch_trigger(
                            con,
                            spec,
                            provider=provider,
                            renderer=Renderer(),
                            as_of=warm_as_of,
                            run_id=f"{RUN_WARM_UP}-{hours_before}",
                            from_email=FROM_EMAIL,
                            policy=bench_policy(args.batch_size),
                            competitors=_competitors(spec, specs),
                        )
                        assert summary.skipped_reason is None, summary.skipped_reason
                        sent += summary.sent
            finally:
                con.close()
            if not warm.ticks:
                warm.first_seconds, warm.first_sent = stage.seconds, sent
                warm.first_dbt_peak_mib = dbt.peak_rss_mib
            warm.ticks += 1
            warm.sent += sent
            print(
                f"  warm-up tick at {warm_as_of.isoformat()}: {sent:,} emails, "
                f"{stage.seconds:.1f} s",
                file=sys.stderr,
            )
    return warm


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _md_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None
) -> str:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column (default: l, then r)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |"]
    align = align or "l" + "r" * (len(header) - 1)
    lines.append("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-"))
    try:
        return _bench(args, tmp / "warehouse.duckdb")
    finally:
        if args.keep:
            print(f"Warehouse kept at {tmp / 'warehouse.duckdb'}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _bench(args: argparse.Namespace, warehouse: Path) -> int:
    as_of = END
    specs = triggers_from_manifest(ensure_manifest())
    stages = {
        "generate": Stage("generate (+ ensure_ledger)", "raw rows written"),
        "dbt": Stage("dbt build", "raw rows read"),
        "tick": Stage("tick 1 (dispatch_trigger)", "emails sent"),
        "render": Stage("render alone (tick 1's emails)", "emails rendered"),
        "synthetic": Stage("push (synthetic)", "messages sent"),
        "second": Stage("second tick (no-op)", "candidates re-diffed"),
        "next": Stage("dbt build two hours later (incremental)", "raw rows read"),
        "full": Stage("the same dbt build with --full-refresh", "raw rows read"),
    }
    print(
        f"nudge tick benchmark: {args.customers:,} customers, seed {args.seed}, "
        f"as_of {as_of.isoformat()}, {len(specs)} triggers",
        file=sys.stderr,
    )

    raw = _generate(warehouse, args, stages["generate"])
    print(f"  generate done in {stages['generate'].seconds:.1f}s", file=sys.stderr)
    bare_scan = _bare_scan_seconds(warehouse)
    warm_up = _warm_up(warehouse, specs, as_of, args) if args.warm_up_hours else None
    dbt = _dbt_build(
        warehouse,
        as_of,
        stages["dbt"],
        memory_limit=args.tick_memory_limit,
        threads=args.tick_dbt_threads,
    )
    stages["dbt"].rows = sum(raw.values())
    print(f"  dbt build done in {stages['dbt'].seconds:.1f}s", file=sys.stderr)

    # The push's own peak: this process's high-water mark started over (the generator ran here).
    push_peak_measured = _reset_own_peak_rss()
    con = connect(warehouse)
    if args.tick_memory_limit:
        con.execute(f"set memory_limit = '{args.tick_memory_limit}'")
    renderer = Renderer()
    runs: list[TriggerRun] = []
    second: list[SecondTick] = []
    samples: list[Message] = []
    try:
        eligibility = _eligibility_tables(con, as_of)
        with (
            FastSink() as sink,
            SendGridProvider(
                API_KEY, sink.url, timeout=30.0, max_concurrency=args.concurrency, max_attempts=3
            ) as provider,
            EspServer(api_key=API_KEY) as server,
            SendGridProvider(
                API_KEY, server.url, timeout=30.0, max_concurrency=args.concurrency, max_attempts=3
            ) as counted,
        ):
            before = sink.stats()
            for spec in specs:
                runs.append(
                    _tick_one_trigger(
                        con,
                        spec,
                        provider=provider,
                        renderer=renderer,
                        as_of=as_of,
                        stage=stages["tick"],
                        policy=bench_policy(args.batch_size),
                        competitors=_competitors(spec, specs),
                    )
                )
            # VmHWM, not getrusage: ru_maxrss keeps the peak of threads that already exited.
            push_peak_mib = _vm_hwm_mib(os.getpid()) if push_peak_measured else None
            handed_over = sum(r.sent for r in runs)
            after = sink.stats()
            received = after["messages"] - before["messages"]
            assert received == handed_over, (received, handed_over)
            assert after["distinct"] - before["distinct"] == received, "a send reached it twice"
            _render_again(con, specs, renderer, stages["render"], samples)
            print("  tick 1 done", file=sys.stderr)

            messages = _synthetic_messages(args.push_messages, samples[0] if samples else None)
            payload_kib = (
                sum(len(m.html) + len(m.text) for m in messages) / len(messages) / 1024
                if messages
                else 0.0
            )
            connections = _synthetic_push(
                counted, server, messages, args.batch_size, stages["synthetic"]
            )
            assert not server.errors, server.errors
            del messages
            print("  synthetic push done", file=sys.stderr)

            for spec in specs:
                start = time.perf_counter()
                with stages["second"].timed():
                    summary = dispatch_trigger(
                        con,
                        spec,
                        provider=provider,
                        renderer=renderer,
                        as_of=as_of,
                        run_id=RUN_2,
                        from_email=FROM_EMAIL,
                        policy=bench_policy(args.batch_size),
                        competitors=_competitors(spec, specs),
                    )
                elapsed = time.perf_counter() - start
                assert summary.skipped_reason is None, summary.skipped_reason
                assert summary.new == 0, f"second tick planned {summary.new} new {spec.name} sends"
                assert summary.sent == 0, f"second tick sent {summary.sent} {spec.name} emails"
                stages["second"].rows += summary.candidates
                second.append(
                    SecondTick(
                        spec.name, elapsed, summary.candidates, summary.new, summary.already_sent
                    )
                )
            assert sink.stats()["requests"] == after["requests"], "the second tick reached the ESP"
        ledger_rows = con.execute("select count(*) from nudge.send_ledger").fetchall()[0]
    finally:
        con.close()
    # The incremental models against rebuilding them in full, the same hour, one after the other.
    # The first incremental build after a full one recomputes every key once (everything was
    # loaded at the instant the models were last computed at, which nudge_changed_keys counts
    # as changed), so the steady state is the build after it.
    # Each hour brings an hour of events, as a shop's would: without them a steady hour only
    # shows the clock-skewed events coming due, and the data tests have no load to check.
    # After two or more warm-up ticks the timed tick's build was a steady one already.
    settled = args.warm_up_hours >= 2
    if not settled:
        _arrive(warehouse, as_of + timedelta(hours=1))
        _dbt_build(warehouse, as_of + timedelta(hours=1), Stage("settle", ""))
    next_hour = as_of + timedelta(hours=1 if settled else 2)
    new_events = _arrive(warehouse, next_hour)
    _dbt_build(warehouse, next_hour, stages["next"])
    if not args.skip_full_refresh:
        _dbt_build(warehouse, next_hour, stages["full"], full_refresh=True)
    stages["next"].rows = stages["full"].rows = sum(raw.values())
    print("  incremental and full-refresh builds done", file=sys.stderr)
    db_mib = warehouse.stat().st_size / 2**20

    # -- report ------------------------------------------------------------------------------
    print(
        f"\n### nudge tick benchmark: {args.customers:,} customers (seed {args.seed}, "
        f"as_of {as_of.isoformat()})\n"
    )
    print(
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}; raw rows: "
        + ", ".join(f"{k} {v:,}" for k, v in raw.items())
        + f"; warehouse file {db_mib:,.0f} MiB.\n"
    )
    dbt_peak = "n/a" if dbt.peak_rss_mib is None else f"{dbt.peak_rss_mib:,.0f}"
    rows = [
        (s.name, s.seconds, s.rows, s.rate, s.unit, f"{s.peak_rss_mib:,.0f}")
        for s in stages.values()
    ]
    print(
        _md_table(
            ("stage", "seconds", "rows", "rows/s", "rows are", "peak RSS so far (MiB)"),
            rows,
            align="lrrrlr",
        )
    )
    kind = (
        f"steady state (after {warm_up.ticks} hourly warm-up ticks)"
        if warm_up
        else "a first tick on an empty ledger (it sends the whole backlog still within grace)"
    )
    if args.tick_memory_limit:
        kind += f", DuckDB memory_limit {args.tick_memory_limit}"
    if args.tick_dbt_threads:
        kind += f", {args.tick_dbt_threads} dbt threads"
    print(
        f"\nTick 1 (dbt build + every trigger's dispatch) = "
        f"{stages['dbt'].seconds + stages['tick'].seconds:,.1f} s, {kind}; the repeated tick's "
        f"sends cost {stages['second'].seconds:,.2f} s on top of its dbt build."
    )
    push_peak = "n/a" if push_peak_mib is None else f"{push_peak_mib:,.0f}"
    print(
        f"Peak RSS: this process {_peak_rss_mib():,.0f} MiB over the whole bench, "
        f"{push_peak} MiB during the tick's push; dbt subprocess {dbt_peak} MiB. "
        f"Synthetic push: {args.concurrency} workers over {connections} keep-alive connections, "
        f"~{payload_kib:,.1f} KiB of body per message.\n"
    )

    events = raw.get("events", 0)
    size = f"{args.customers:,} customers, {events:,} events"
    tick_seconds = stages["dbt"].seconds + stages["tick"].seconds
    ledger_state = "steady state" if warm_up else "empty ledger"
    if args.tick_memory_limit:
        ledger_state += f", memory_limit {args.tick_memory_limit}"
    if args.tick_dbt_threads:
        ledger_state += f", {args.tick_dbt_threads} dbt threads"
    second_seconds = stages["second"].seconds
    for figure in (
        Figure(
            "tick",
            f"tick (dbt build + every trigger's push), {size}, {ledger_state}",
            tick_seconds,
            "s",
            "bare DuckDB scan of raw.events (customer_id, max(occurred_at))",
            bare_scan,
        ),
        Figure("tick", f"repeated tick's sends (no-op diff), {size}", second_seconds, "s"),
        Figure(
            "tick",
            f"dbt build, steady hour ({new_events:,} new events), incremental models, {size}",
            stages["next"].seconds,
            "s",
            *(
                ("the same build with --full-refresh", stages["full"].seconds)
                if not args.skip_full_refresh
                else (None, None)
            ),
        ),
        Figure("tick", f"tick's dbt build peak RSS, {size}", dbt.peak_rss_mib or 0.0, "MiB"),
        Figure("tick", f"tick's push peak RSS (this process), {size}", push_peak_mib or 0.0, "MiB"),
        *(
            [
                Figure(
                    "tick",
                    f"first tick (dbt build + push), {size}, empty ledger "
                    f"({warm_up.first_sent:,} sent)",
                    warm_up.first_seconds,
                    "s",
                    "bare DuckDB scan of raw.events (customer_id, max(occurred_at))",
                    bare_scan,
                ),
                Figure(
                    "tick",
                    f"first tick's dbt build peak RSS, {size}",
                    warm_up.first_dbt_peak_mib or 0.0,
                    "MiB",
                ),
            ]
            if warm_up
            else []
        ),
    ):
        record(args.summary, figure)

    print("#### Eligibility tables after dbt build\n")
    print(_md_table(("table", "rows", "eligible", "due now"), eligibility))

    print("\n#### Tick 1 per trigger\n")
    print(
        _md_table(
            ("trigger", "candidates", "eligible", "planned", "sent", "failed", "seconds"),
            [
                (r.spec.name, r.candidates, r.eligible, r.planned, r.sent, r.failed, r.seconds)
                for r in runs
            ],
        )
    )
    print("\n#### Second tick (same as_of) per trigger\n")
    print(
        _md_table(
            ("trigger", "seconds", "candidates", "new (must be 0)", "already_sent"),
            [(t.trigger, t.seconds, t.candidates, t.new, t.already_sent) for t in second],
        )
    )

    nodes = sorted(
        dbt.results.get("results", []), key=lambda r: r.get("execution_time", 0), reverse=True
    )
    if nodes:
        print(
            f"\n#### Slowest dbt nodes (dbt's own elapsed {dbt.results.get('elapsed_time', 0):.1f}"
            f" s of {stages['dbt'].seconds:.1f} s wall; partial parse used: "
            f"{dbt.partial_parse})\n"
        )
        print(
            _md_table(
                ("node", "seconds", "status"),
                [
                    (n["unique_id"], float(n.get("execution_time", 0.0)), n.get("status"))
                    for n in nodes[:6]
                ],
                align="lrl",
            )
        )

    problems = [e for r in runs for e in r.errors]
    if problems:
        print(f"\n{len(problems)} render/send failures in tick 1, first few:")
        for line in problems[:5]:
            print(f"- {line}")
    if warm_up:
        print(f"\nBefore tick 1: {warm_up.note}.")
    print(f"\nLedger rows at the end: {ledger_rows[0] if ledger_rows else 0:,}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
