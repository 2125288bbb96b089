"""nudge: warehouse-native triggered email. Commands:

  run              one tick now (or --as-of): dbt build, then every trigger's sends
                   (--transactional: only the transactional triggers, as every 5 minutes)
  demo             generate a demo warehouse and replay the last three days of ticks
  preview          who would get which step now, why others would not, samples (sends nothing)
  render           the exact email one customer would get for one step (HTML, text, headers)
  backtest         replay hourly ticks over history on a scratch copy; daily volumes
  report           one self-contained HTML report with charts: sends, funnel, holdout lift,
                   A/B variants, deliverability (--from/--to YYYY-MM-DD, --out DIR)
  resolve-unknown  list sends whose delivery is unknown; resend or drop them
  serve            the consent service: one-click unsubscribe, preference and confirm pages,
                   and the providers' event webhooks
  erase            remove a person from everything nudge stores (GDPR Article 17)
  export           everything nudge holds about a person, as JSON (GDPR Articles 15, 20)
  why              why a person did or did not get an email
  init             create the nudge schema and send ledger in the warehouse
  dev              the Dagster UI on this project (dg dev), with nudge's runs in it

Settings come from NUDGE_* environment variables (see the README); the warehouse defaults to
.nudge/warehouse.duckdb and the emails to the local outbox .nudge/outbox.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from .clock import parse_as_of, this_hour
from .config import ConfigError, Settings
from .runs import COUNTS

# The counts the summary table shows, in order (expired and skipped are in the ledger).
SUMMARY_COLUMNS = tuple(c for c in COUNTS if c not in ("expired", "skipped"))

# `nudge run` exit codes: 0 ok, 1 the run failed, 2 bad usage or configuration, 3 the run
# succeeded but a guard held a trigger's sends (schedulers and CI see it as not-OK).
EXIT_HELD = 3


def format_summary(triggers: list[dict[str, Any]]) -> str:
    """A fixed-width table of per-trigger counts, plus exclusions by reason."""
    header = ["trigger", *SUMMARY_COLUMNS, "excluded (by reason)"]
    rows = [
        [
            t["trigger"],
            *(str(t.get(c, 0)) for c in SUMMARY_COLUMNS),
            ", ".join(f"{k} {v}" for k, v in sorted(t.get("excluded", {}).items())) or "-",
        ]
        for t in triggers
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    from .tick import run_tick

    as_of = parse_as_of(args.as_of).isoformat() if args.as_of else None
    outcome = run_tick(
        as_of,
        allow_late=args.allow_late,
        verbose=args.verbose,
        approve=args.approve or None,
        transactional=args.transactional,
        full_refresh=args.full_refresh,
    )
    if args.json:
        print(json.dumps(outcome.to_dict(), indent=2, default=str))
    else:
        kind = "transactional tick" if args.transactional else "tick"
        print(f"{kind} as_of {outcome.as_of or 'now'}  run {outcome.run_id}")
        if outcome.triggers:
            print(format_summary(outcome.triggers))
        for t in outcome.triggers:
            if t.get("skipped_reason"):
                print(f"  {t['trigger']}: skipped: {t['skipped_reason']}")
            for err in t.get("errors", [])[:5]:
                print(f"  {t['trigger']}: failed send {err}")
        for check in outcome.failed_checks:
            print(f"  check failed: {check}")
        if not outcome.success:
            print(f"run failed: {outcome.error}", file=sys.stderr)
    for t in outcome.held:
        # Loud on stderr even with --json: a held trigger needs a person.
        print(
            f"HELD {t['trigger']}: {t['held']} new sends not sent: {t['hold_reason']}\n"
            f"  Check {t['trigger']}'s eligibility table; to send them anyway run:\n"
            f"  {_self_command()} run --approve {t['trigger']}"
            + (f" --as-of {outcome.as_of} --allow-late" if args.as_of else ""),
            file=sys.stderr,
        )
    if not outcome.success:
        return 1
    return EXIT_HELD if outcome.held else 0


def _cmd_resolve_unknown(args: argparse.Namespace) -> int:
    from . import audit, ledger
    from .warehouse import locked_warehouse

    settings = Settings.from_env()
    with locked_warehouse(settings) as con:
        ledger.ensure_ledger(con)
        if args.journal_lost:
            lost = ledger.journal_lost(
                con,
                trigger=args.journal_lost,
                run_id=f"journal-lost-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            )
            audit.record(
                con,
                "journal_lost",
                actor=audit.cli_actor(),
                subject=args.journal_lost,
                detail={"unknown": lost},
            )
            print(
                f"{lost} unfinished sends of {args.journal_lost} are unknown now (the journal "
                "that knew whether they went out is lost): check the provider, then --resend "
                "or --drop them"
            )
            return 0
        rows = ledger.unknown_sends(con, trigger=args.trigger)
        if args.send_id:
            wanted = set(args.send_id)
            missing = wanted - {r[0] for r in rows}
            if missing:
                raise ConfigError(
                    f"not unknown sends{f' of {args.trigger}' if args.trigger else ''}: "
                    f"{', '.join(sorted(missing))}"
                )
            rows = [r for r in rows if r[0] in wanted]
        if not (args.resend or args.drop):
            print(f"{len(rows)} unknown sends (delivery not known: check the provider)")
            for send_id, trigger, step, customer_id, provider, sending_at, error in rows:
                when = f"{sending_at:%Y-%m-%d %H:%M:%S}Z" if sending_at else "?"
                print(
                    f"  {send_id}  {trigger}/{step}  customer {customer_id}  via {provider}"
                    f"  at {when}  {error or ''}"
                )
            if rows:
                print("Resolve with --resend (not delivered) or --drop (delivered / skip).")
            return 0
        action = "resend" if args.resend else "drop"
        changed = ledger.resolve_unknown(
            con,
            action=action,
            run_id=f"resolve-unknown-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            trigger=args.trigger,
            send_ids=[r[0] for r in rows],
        )
        audit.record(
            con,
            f"resolve_unknown_{action}",
            actor=audit.cli_actor(),
            subject=args.trigger,
            detail={"send_ids": [r[0] for r in rows], "changed": changed},
        )
    if args.resend:
        print(f"{changed} sends will be resent by the next tick (while their window is open)")
    else:
        print(f"{changed} sends dropped (status skipped, reason unknown_dropped)")
    return 0


def _as_of(value: str | None) -> datetime:
    return parse_as_of(value) if value else datetime.now(UTC).replace(microsecond=0)


def _cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview

    result = preview(Settings.from_env(), args.trigger, _as_of(args.as_of), samples=args.samples)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return 0
    print(f"preview of {result.trigger} at {result.as_of} (nothing sent, ledger untouched)")
    print("\ndue now:" if result.decisions else "\ndue now: nothing")
    for key, count in result.decisions.items():
        print(f"  {key:<60} {count:>6}")
    print("\nnot sent now, by step and reason:" if result.excluded else "")
    for step, reasons in result.excluded.items():
        print(f"  {step}: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))
    for sample in result.samples:
        print(
            f"\n--- sample {sample.get('step', '')} to {sample.get('to', '')} "
            f"(send_id {sample['send_id']})"
        )
        if "error" in sample:
            print(f"  render failed: {sample['error']}")
            continue
        print(f"Subject: {sample['subject']}\n")
        print(sample["text"].strip())
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .preview import render_for_customer

    out_dir = Path(args.out or f".nudge/render/{args.trigger}-{args.step}-{args.customer}")
    rendered = render_for_customer(
        Settings.from_env(),
        trigger=args.trigger,
        step=args.step,
        customer_id=args.customer,
        as_of=_as_of(args.as_of),
        out_dir=out_dir.resolve(),
        variant=args.variant,
    )
    status = (
        "would be sent"
        if rendered.exclusion_reason is None
        else f"would NOT be sent now: {rendered.exclusion_reason}"
    )
    print(
        f"{args.trigger}/{args.step} for customer {args.customer} (send_id "
        f"{rendered.send_id}, due {rendered.due_at}): {status}"
    )
    for path in rendered.files:
        print(f"  {path}")
    print(f"Open it: file://{rendered.files[0]}")
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    from .backtest import backtest, format_backtest

    def progress(i: int, total: int, tick: datetime) -> None:
        if not args.json and (i == total or i % 24 == 0):
            print(f"  [{i}/{total}] replayed up to {tick:%Y-%m-%d %H:%M}Z", file=sys.stderr)

    report = backtest(
        Settings.from_env(),
        parse_as_of(args.start),
        parse_as_of(args.end),
        triggers=args.trigger or (),
        progress=progress,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_backtest(report))
    return 0


def _day(value: str) -> date:
    """An argparse type: a calendar day, YYYY-MM-DD (bad input is a usage error, exit 2)."""
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import last_tick, write_report
    from .tick import run_reporting

    if args.date_from and args.date_to and args.date_from > args.date_to:
        raise ConfigError(f"--from {args.date_from} is after --to {args.date_to}")
    settings = Settings.from_env()
    if not args.no_refresh:
        # The daily reporting job may be a day old: rebuild the reporting models first, as of
        # the latest tick (what has happened), under the warehouse lock like any tick.
        as_of = parse_as_of(args.as_of) if args.as_of else last_tick(settings)
        outcome = run_reporting(as_of.isoformat(), settings=settings, verbose=args.verbose)
        if not outcome.success:
            print(f"the reporting models failed to build: {outcome.error}", file=sys.stderr)
            return 1
        print(f"reporting models built as of {as_of.isoformat()}")
    out = Path(args.out).resolve() if args.out else settings.warehouse.parent / "reports"
    path = write_report(settings, out, date_from=args.date_from, date_to=args.date_to)
    print(f"report: {path.resolve().as_uri()}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from .landing import LandingStore
    from .links import LinkSettings
    from .serve import create_app
    from .webhooks import WebhookSettings

    settings = Settings.from_env()
    links = LinkSettings.from_env()
    links.require_shared()
    webhooks = WebhookSettings.from_env(os.environ)
    store = LandingStore(settings.landing_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(
        f"nudge serve on http://{args.host}:{args.port}  (links point at {links.public_url}; "
        f"changes land in {store.path}; webhooks: "
        f"{', '.join(webhooks.configured()) or 'none configured'})",
        flush=True,
    )
    uvicorn.run(
        create_app(links, store, webhooks=webhooks),
        host=args.host,
        port=args.port,
        # uvicorn's access log prints paths, and /u/<token> identifies a person: the app
        # logs the route instead.
        access_log=False,
        server_header=False,
        proxy_headers=True,
        log_level="info",
    )
    return 0


def _cmd_erase(args: argparse.Namespace) -> int:
    from .privacy import default_render_dirs, erase, format_erasure

    result = erase(
        Settings.from_env(),
        customer_ids=[args.customer] if args.customer else [],
        emails=[args.email] if args.email else [],
        render_dirs=default_render_dirs(),
    )
    print(format_erasure(result))
    return 1 if result.compaction_error else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .privacy import export, to_json

    document = to_json(export(Settings.from_env(), args.customer)) + "\n"
    if not args.out:
        sys.stdout.write(document)
        return 0
    out = Path(args.out)
    # Personal data: readable by its owner only.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(document)
    print(f"everything nudge holds about customer {args.customer} is in {out}")
    return 0


def _cmd_why(args: argparse.Namespace) -> int:
    from .privacy import format_why, to_json, why

    result = why(Settings.from_env(), args.customer, trigger=args.trigger)
    print(to_json(result.to_dict()) if args.json else format_why(result))
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from . import ledger
    from .warehouse import locked_warehouse

    settings = Settings.from_env()
    with locked_warehouse(settings) as con:
        applied = ledger.ensure_ledger(con)
    print(
        f"ledger ready in {settings.postgres.url if settings.postgres else settings.warehouse}"
        + (f" (applied {', '.join(applied)})" if applied else " (up to date)")
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_progress, prepare_demo_warehouse
    from .demo_events import feed, webhook_service
    from .demo_shoppers import shoppers_respond
    from .providers import write_outbox_index_html
    from .report import write_report
    from .tick import run_reporting, run_tick
    from .warehouse import open_warehouse

    settings = Settings.from_env()
    if args.every < 1 or args.hours < 1:
        raise ConfigError("--hours and --every must be at least 1")
    end = parse_as_of(args.end) if args.end else this_hour()
    print(prepare_demo_warehouse(settings, customers=args.customers, end=end, seed=args.seed))
    if settings.esp == "outbox":
        if settings.outbox_dir.exists():
            shutil.rmtree(settings.outbox_dir)
        print(f"emails go to the outbox {settings.outbox_dir} (NUDGE_ESP=outbox)")
    totals: dict[str, dict[str, Any]] = {}
    count = max(1, -(-args.hours // args.every))  # ceil: the span is covered
    ticks = [end - timedelta(hours=args.every * (count - 1 - i)) for i in range(count)]
    reported: Counter[str] = Counter()
    orders = orders_after_holdout = 0
    with webhook_service(settings) as service:
        for i, tick in enumerate(ticks, start=1):
            started = time.monotonic()
            # The demo simulates past ticks on data it just made, so it sends for a past as_of.
            outcome = run_tick(
                tick.isoformat(), settings=settings, allow_late=True, verbose=args.verbose
            )
            took = time.monotonic() - started
            sent = ", ".join(f"{t['trigger']} {t['sent']}" for t in outcome.triggers if t["sent"])
            print(
                f"[{i:>2}/{len(ticks)}] tick {tick:%a %H:%M}Z  sent: {sent or '-'}  ({took:.1f}s)"
            )
            if not outcome.success:
                print(f"tick failed: {outcome.error}", file=sys.stderr)
                return 1
            # What a provider would report within the hour, through the real webhook: the
            # next tick drains it (suppressions, engagement-based skips).
            reported += feed(settings, service, tick).posted
            # ... and what the shop's customers do in the days after: some order.
            ordered = shoppers_respond(settings, tick, ticks[-1])
            orders += ordered.placed
            orders_after_holdout += ordered.after_holdout
            for t in outcome.triggers:
                total = totals.setdefault(
                    t["trigger"],
                    {
                        "trigger": t["trigger"],
                        "excluded": {},
                        **dict.fromkeys(SUMMARY_COLUMNS, 0),
                    },
                )
                for column in ("new", "resumed", "sent", "failed", "unknown", "holdout", "held"):
                    total[column] += t.get(column, 0)
                # Candidates, deferrals and exclusions describe one tick's window: the last's.
                for column in ("candidates", "eligible", "already_sent", "deferred"):
                    total[column] = t.get(column, 0)
                total["excluded"] = t.get("excluded", {})
    print()
    print(
        f"Sent over {len(ticks)} ticks, one every {args.every} h (candidates, deferred and "
        "exclusions: last tick):"
    )
    print(format_summary(sorted(totals.values(), key=lambda t: t["trigger"])))
    print(
        "\nThe provider's reports, posted to nudge serve's webhook after each tick: "
        + ", ".join(f"{kind} {n}" for kind, n in sorted(reported.items()))
    )
    print(
        f"The shoppers' orders after the emails (attribution and lift): {orders} placed, "
        f"{orders_after_holdout} of them by customers held out"
    )
    print()
    with contextlib.closing(open_warehouse(settings)) as con:
        print(format_progress(con))
    if settings.esp == "outbox":
        index = write_outbox_index_html(settings.outbox_dir)
        print(f"\nOpen the rendered emails (newest tick first): file://{index}")
    reporting = run_reporting(ticks[-1].isoformat(), settings=settings, verbose=args.verbose)
    if not reporting.success:
        print(f"the reporting models failed to build: {reporting.error}", file=sys.stderr)
        return 1
    report = write_report(settings, settings.warehouse.parent / "reports")
    print(f"\nWhat the emails earned (funnels, lift, A/B, deliverability): {report.as_uri()}")
    print(
        "\nRun the last tick again (it sends nothing twice):\n"
        f"  {_self_command()} run --as-of {ticks[-1].isoformat()} --allow-late"
    )
    if settings.esp == "outbox":
        print(_unsubscribe_walkthrough(ticks[-1] + timedelta(hours=args.every)))
    return 0


def _unsubscribe_walkthrough(next_tick: datetime) -> str:
    """How a newcomer sees one-click unsubscribe work on the demo's own emails."""
    from .links import LinkSettings

    nudge = _self_command()
    url = LinkSettings.from_env().public_url
    late = " --allow-late" if next_tick < datetime.now(UTC) - timedelta(hours=6) else ""
    return (
        "\nUnsubscribe as a recipient would, and watch the next tick honour it:\n"
        f"  1. {nudge} serve                 # in another terminal; the emails link to {url}\n"
        "  2. open a marketing email in the outbox page above, click Unsubscribe, press the "
        "button\n"
        f"  3. {nudge} run --as-of {next_tick.isoformat()}{late}\n"
        f"  4. {nudge} why --customer <the Customer of that email's row>"
    )


def _cmd_dev(args: argparse.Namespace) -> int:
    """Replace this process with ``dg dev`` on nudge's Dagster home, venv tools on PATH."""
    from .tick import prepare_dagster_home

    settings = Settings.from_env()
    home = prepare_dagster_home(settings.dagster_home)
    bin_dir = str(Path(sys.executable).parent)
    dg = shutil.which("dg", path=bin_dir) or shutil.which("dg")
    if dg is None:
        raise ConfigError("`dg` is not installed: pip install -e '.[dev]' (dagster-dg-cli)")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "NUDGE_WAREHOUSE": settings.warehouse_setting,
        # dbt and dg from this virtualenv even when it is not activated (make runs
        # .venv/bin/nudge directly): on PATH, and named as the active one for dg.
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "VIRTUAL_ENV": sys.prefix,
    }
    command = [dg, "dev", "--host", args.host, "--port", str(args.port)]
    print(f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={home})", flush=True)
    os.execvpe(dg, command, env)
    return 0  # not reached


def _self_command() -> str:
    """How this command was invoked (e.g. `.venv/bin/nudge`), so printed commands work as is."""
    invoked = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "nudge" else "nudge"
    return shlex.quote(invoked)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nudge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="one tick (dbt build, then every trigger's sends)")
    run.add_argument("--as-of", help="the tick's instant, ISO-8601 (default: now)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument(
        "--allow-late",
        action="store_true",
        help="send even if --as-of is more than 6 h in the past (it ignores later opt-outs)",
    )
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the incremental models from the whole event history (dbt --full-refresh)",
    )
    run.add_argument(
        "--approve",
        action="append",
        metavar="TRIGGER",
        help="release the guards' hold on TRIGGER for this run (repeatable)",
    )
    run.add_argument(
        "--transactional",
        action="store_true",
        help="only the transactional triggers and the models they need (the 5-minute schedule)",
    )
    run.add_argument("--verbose", action="store_true", help="show Dagster and dbt logs")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="generate a demo warehouse and replay three days of ticks")
    demo.add_argument("--customers", type=int, default=3000, help="demo size (default 3000)")
    demo.add_argument(
        "--hours", type=int, default=72, help="simulated span before --end (default 72)"
    )
    demo.add_argument(
        "--every",
        type=int,
        default=3,
        help="hours between simulated ticks (default 3, so sequences visibly progress in a "
        "few minutes; production ticks hourly)",
    )
    demo.add_argument("--end", help="last tick, ISO-8601 (default: this hour)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--verbose", action="store_true", help="show Dagster and dbt logs")
    demo.set_defaults(func=_cmd_demo)

    preview = sub.add_parser(
        "preview", help="who would get which step now, with reasons and samples (no send)"
    )
    preview.add_argument("--trigger", required=True)
    preview.add_argument("--as-of", help="the instant to look at, ISO-8601 (default: now)")
    preview.add_argument("--samples", type=int, default=3, help="rendered samples (default 3)")
    preview.add_argument("--json", action="store_true")
    preview.set_defaults(func=_cmd_preview)

    render = sub.add_parser(
        "render", help="write the exact email one customer would get (HTML, text, headers)"
    )
    render.add_argument("--trigger", required=True)
    render.add_argument("--step", required=True)
    render.add_argument("--customer", required=True, help="customer_id")
    render.add_argument("--as-of", help="ISO-8601 (default: now)")
    render.add_argument("--variant", help="render this A/B variant instead of the assigned one")
    render.add_argument("--out", help="folder for the files (default .nudge/render/...)")
    render.set_defaults(func=_cmd_render)

    backtest = sub.add_parser(
        "backtest",
        help="replay hourly ticks over history against a scratch ledger; report daily volume",
    )
    backtest.add_argument("--from", dest="start", required=True, help="first tick, ISO-8601")
    backtest.add_argument("--to", dest="end", required=True, help="last tick, ISO-8601")
    backtest.add_argument("--trigger", action="append", help="only this trigger (repeatable)")
    backtest.add_argument("--json", action="store_true")
    backtest.set_defaults(func=_cmd_backtest)

    report = sub.add_parser(
        "report",
        help="write one self-contained HTML report with charts (opens offline in a browser)",
    )
    report.add_argument(
        "--from",
        dest="date_from",
        type=_day,
        metavar="YYYY-MM-DD",
        help="first UTC day of sends (default: the first day with sends)",
    )
    report.add_argument(
        "--to",
        dest="date_to",
        type=_day,
        metavar="YYYY-MM-DD",
        help="last UTC day of sends (default: the last day with sends)",
    )
    report.add_argument(
        "--out", metavar="DIR", help="folder for the file (default: reports/ beside the warehouse)"
    )
    report.add_argument(
        "--as-of", help="build the reporting models as of this instant (default: the last tick)"
    )
    report.add_argument(
        "--no-refresh",
        action="store_true",
        help="report the reporting tables as they are (the daily job's last build)",
    )
    report.add_argument("--verbose", action="store_true", help="show Dagster and dbt logs")
    report.set_defaults(func=_cmd_report)

    resolve = sub.add_parser(
        "resolve-unknown",
        help="list unknown sends, or resend / drop them after checking the provider",
    )
    resolve.add_argument("--trigger", help="only this trigger's unknown sends")
    resolve.add_argument(
        "--send-id", action="append", help="only this send (repeatable; default: all)"
    )
    action = resolve.add_mutually_exclusive_group()
    action.add_argument(
        "--resend", action="store_true", help="they were not delivered: the next tick sends them"
    )
    action.add_argument(
        "--drop", action="store_true", help="do not send them (delivered, or not wanted)"
    )
    action.add_argument(
        "--journal-lost",
        metavar="TRIGGER",
        help="PostgreSQL: the hand-over journal of a dead push of TRIGGER is lost for good; "
        "mark its unfinished sends unknown",
    )
    resolve.set_defaults(func=_cmd_resolve_unknown)

    erase_cmd = sub.add_parser(
        "erase", help="remove a person from everything nudge stores (GDPR Article 17)"
    )
    erase_cmd.add_argument("--customer", help="the customer_id to erase")
    erase_cmd.add_argument(
        "--email", help="the address to erase (with every customer id that has it)"
    )
    erase_cmd.set_defaults(func=_cmd_erase)

    export_cmd = sub.add_parser(
        "export", help="everything nudge holds about a person, as JSON (GDPR Articles 15, 20)"
    )
    export_cmd.add_argument("--customer", required=True, help="customer_id")
    export_cmd.add_argument("--out", help="write the JSON to this file (default: stdout)")
    export_cmd.set_defaults(func=_cmd_export)

    why_cmd = sub.add_parser("why", help="why a person did or did not get an email")
    why_cmd.add_argument("--customer", required=True, help="customer_id")
    why_cmd.add_argument("--trigger", help="only this trigger")
    why_cmd.add_argument("--json", action="store_true")
    why_cmd.set_defaults(func=_cmd_why)

    init = sub.add_parser("init", help="create the nudge schema and send ledger in the warehouse")
    init.set_defaults(func=_cmd_init)

    serve = sub.add_parser(
        "serve", help="the consent service: one-click unsubscribe, preference and confirm pages"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_cmd_serve)

    dev = sub.add_parser("dev", help="the Dagster UI (dg dev) with nudge's runs and schedule")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(func=_cmd_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ValueError) as exc:
        print(f"nudge: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # dbt failed in preview, render or backtest
        print(f"nudge: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
