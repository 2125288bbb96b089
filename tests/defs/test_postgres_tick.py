"""The whole tick on PostgreSQL: ``NUDGE_WAREHOUSE=postgresql://...`` and ``nudge run``.

A demo shop's raw tables are loaded into a real PostgreSQL server and into a DuckDB file. The
same ticks run on both, through SendGrid's API on loopback: dbt builds the models with its
postgres target, the ledger, claims, the consent re-check, settles and the run log live in
PostgreSQL, and the advisory lock makes two runs started together take turns. Both engines must
send exactly the same emails, each delivered once.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dagster_project.config import POSTGRES_PASSWORD_VAR
from dagster_project.demo_data import generate_to_file
from tests.support.esp_server import EspServer
from tests.support.postgres import PostgresServer, load_raw, postgres_server
from tests.support.processes import nudge

pytestmark = pytest.mark.dbt

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
NEXT_HOUR = AS_OF + timedelta(hours=1)
API_KEY = "SG.postgres-tick-key"


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Engines:
    folder: Path
    duckdb_file: Path
    database: PostgresServer
    # Per tick: the runs on each engine, and what each engine's ESP received.
    duckdb_runs: dict[datetime, list[Run]]
    postgres_runs: dict[datetime, list[Run]]
    duckdb_received: list[str]
    postgres_received: list[str]
    duckdb_env: dict[str, str]
    postgres_env: dict[str, str]
    # send_id -> the subject and content the provider received, per engine.
    duckdb_emails: dict[str, str]
    postgres_emails: dict[str, str]


def _env(folder: Path, warehouse: str, esp_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "DAGSTER_"))}
    env.update(
        NUDGE_WAREHOUSE=warehouse,
        NUDGE_ESP="sendgrid",
        NUDGE_ESP_BASE_URL=esp_url,
        NUDGE_ESP_API_KEY=API_KEY,
        NUDGE_LINK_SECRET="pg-tick-link-secret-" + "k" * 32,
        NUDGE_PUBLIC_URL="https://nudge.shop.example",
        NUDGE_OUTBOX_DIR=str(folder / "outbox"),
        DAGSTER_HOME=str(folder / "dagster_home"),
        **extra,
    )
    return env


def _finish(processes: list[subprocess.Popen[str]]) -> list[Run]:
    runs = []
    for process in processes:
        out, err = process.communicate(timeout=900)
        runs.append(Run(process.returncode, out, err))
    return runs


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    folder = tmp_path_factory.mktemp("pg_tick")
    demo = folder / "demo.duckdb"
    generate_to_file(demo, customers=300, end=AS_OF)
    duckdb_file = folder / "duck" / "warehouse.duckdb"
    duckdb_file.parent.mkdir()
    duckdb_file.write_bytes(demo.read_bytes())
    with postgres_server() as server, EspServer(api_key=API_KEY) as duck_esp:
        database = server.new_database("shop")
        load_raw(demo, database)
        url = f"postgresql://{database.user}@{database.host}:{database.port}/{database.dbname}"
        with EspServer(api_key=API_KEY) as pg_esp:
            duck_env = _env(duckdb_file.parent, str(duckdb_file), duck_esp.url)
            pg_env = _env(
                folder / "pg", url, pg_esp.url, **{POSTGRES_PASSWORD_VAR: database.password}
            )
            tick = ["run", "--allow-late", "--json", "--as-of"]
            # The first tick on each engine, side by side (different warehouses).
            first = _finish(
                [
                    nudge(*tick, AS_OF.isoformat(), env=duck_env),
                    nudge(*tick, AS_OF.isoformat(), env=pg_env),
                ]
            )
            # An hour later: on PostgreSQL, a schedule tick and a manual run at once.
            second = _finish(
                [
                    nudge(*tick, NEXT_HOUR.isoformat(), env=duck_env),
                    nudge(*tick, NEXT_HOUR.isoformat(), env=pg_env),
                    nudge(*tick, NEXT_HOUR.isoformat(), env=pg_env),
                ]
            )
            yield Engines(
                folder=folder,
                duckdb_file=duckdb_file,
                database=database,
                duckdb_runs={AS_OF: first[:1], NEXT_HOUR: second[:1]},
                postgres_runs={AS_OF: first[1:], NEXT_HOUR: second[1:]},
                duckdb_received=duck_esp.received_send_ids(),
                postgres_received=pg_esp.received_send_ids(),
                duckdb_env=duck_env,
                postgres_env=pg_env,
                duckdb_emails=_emails(duck_esp),
                postgres_emails=_emails(pg_esp),
            )


def _emails(server: EspServer) -> dict[str, str]:
    """What each delivered email said: its subject and its HTML and text parts."""
    found = {}
    for request in server.send_requests():
        if request.accepted and isinstance(request.body, dict):
            content = [request.body.get("subject"), request.body.get("content")]
            for send_id in request.accepted:
                found[send_id] = json.dumps(content, sort_keys=True)
    return found


def _postgres_rows(database: PostgresServer, query: str) -> list[tuple]:
    con = database.connect()
    try:
        with con.cursor() as cur:
            cur.execute(query)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        con.close()


def _duckdb_rows(path: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


SENT_BY_TICK = (
    "select send_id, sent_as_of from nudge.send_ledger where status = 'sent' order by send_id"
)


def test_every_run_on_either_engine_exits_0(engines: Engines) -> None:
    for runs in (*engines.duckdb_runs.values(), *engines.postgres_runs.values()):
        for run in runs:
            assert run.code == 0, run.out[-2000:] + run.err[-4000:]


def test_postgresql_sends_exactly_what_duckdb_sends_tick_by_tick(engines: Engines) -> None:
    on_duckdb = _duckdb_rows(engines.duckdb_file, SENT_BY_TICK)
    on_postgres = _postgres_rows(engines.database, SENT_BY_TICK)
    assert len({at for _, at in on_duckdb}) == 2, "both ticks must send for this to prove much"
    assert on_postgres == on_duckdb


def test_each_email_reached_the_provider_once_though_two_runs_overlapped(
    engines: Engines,
) -> None:
    received = engines.postgres_received
    assert received and len(received) == len(set(received)), "an email was delivered twice"
    sent = {r[0] for r in _postgres_rows(engines.database, SENT_BY_TICK)}
    assert set(received) == sent
    assert sorted(received) == sorted(engines.duckdb_received)


def test_each_email_reads_the_same_from_either_engine(engines: Engines) -> None:
    # Rendered from the ledger's context, which each engine writes as JSON its own way
    # (to_json of a row on PostgreSQL, of a struct on DuckDB): names, items, prices, dates
    # and links must come out the same.
    assert engines.postgres_emails and set(engines.postgres_emails) == set(engines.duckdb_emails)
    differ = [
        send_id
        for send_id, email in engines.postgres_emails.items()
        if email != engines.duckdb_emails[send_id]
    ]
    assert not differ, (
        engines.postgres_emails[differ[0]][:3000],
        engines.duckdb_emails[differ[0]][:3000],
    )
    # The two runs of the second tick took turns: one sent the hour's emails, the other found
    # them in the ledger; each recorded its run.
    runs = _postgres_rows(
        engines.database,
        "select count(distinct run_id) from nudge.runs where as_of = '"
        + NEXT_HOUR.isoformat()
        + "'",
    )
    assert runs == [(2,)]


def test_the_ledgers_history_and_states_agree_on_postgresql(engines: Engines) -> None:
    # Every state change is in send_events, in the same transaction: the history of each
    # send ends in the ledger's status.
    mismatched = _postgres_rows(
        engines.database,
        """
        select count(*) from nudge.send_ledger as ledger
        where ledger.status != (
            select events.status from nudge.send_events as events
            where events.send_id = ledger.send_id
            order by events.recorded_at desc, events.status = ledger.status desc
            limit 1
        )
        """,
    )
    assert mismatched == [(0,)]
    twice = _postgres_rows(
        engines.database,
        "select count(*) from (select send_id from nudge.send_events where status = 'sent'"
        " group by send_id having count(*) > 1) as twice",
    )
    assert twice == [(0,)]


def test_the_password_is_in_no_output_and_the_state_stays_local(engines: Engines) -> None:
    for runs in engines.postgres_runs.values():
        for run in runs:
            assert engines.database.password not in run.out + run.err
    # Nothing of the database's was written as a DuckDB file or a folder named after the URL.
    assert not list((engines.folder / "pg").rglob("*.duckdb"))
    assert not (Path.cwd() / "postgresql:").exists()


def _nudge(engines: Engines, *args: str) -> Run:
    (run,) = _finish([nudge(*args, env=engines.postgres_env)])
    return run


def _same_figure(left: str | None, right: str | None) -> bool:
    """Two cells' data-values: equal, or the same float but for the last bits (the engines
    may add a column's doubles in another order)."""
    if left == right:
        return True
    try:
        return math.isclose(float(left or "nan"), float(right or "nan"), rel_tol=1e-9)
    except ValueError:
        return False


def test_nudge_report_on_postgresql_shows_every_figure_duckdb_shows(
    engines: Engines, tmp_path: Path
) -> None:
    """`nudge report` rebuilds the reporting models as of the last tick and writes the page,
    on either engine: after the same ticks, the same rows and figures in every table."""
    from tests.support.browser import load
    from tests.test_report import CHARTS, tables

    duck, pg = _finish(
        [
            nudge("report", "--out", str(tmp_path / "duck"), env=engines.duckdb_env),
            nudge("report", "--out", str(tmp_path / "pg"), env=engines.postgres_env),
        ]
    )
    assert duck.code == 0 and pg.code == 0, duck.err + pg.err
    assert f"reporting models built as of {NEXT_HOUR.isoformat()}" in pg.out, pg.out
    (pg_path,) = (tmp_path / "pg").glob("nudge-report-*.html")
    (duck_path,) = (tmp_path / "duck").glob("nudge-report-*.html")
    assert pg_path.name == duck_path.name  # the same range: the days with sends
    assert engines.database.password not in pg_path.read_text(encoding="utf-8")

    page = load(pg_path.as_uri(), budget_ms=8000)
    assert page.errors == [], page.console
    for chart in CHARTS:
        section = re.search(rf'id="{chart}".*?</section>', page.dom, re.S)
        assert section and 'class="main-svg"' in section.group(0), chart
    shown = tables(page.dom)
    expected = tables(duck_path.read_text(encoding="utf-8"))
    assert set(shown) == set(expected)
    sends = shown["table-sends"]
    assert sum(int(row["sent"]["value"] or 0) for row in sends) == len(engines.postgres_received), (
        "the daily sends are not what the provider accepted"
    )
    for table_id, rows in expected.items():
        assert len(shown[table_id]) == len(rows), table_id
        for want, got in zip(rows, shown[table_id], strict=True):
            assert set(got) == set(want), table_id
            for field, cell in want.items():
                assert _same_figure(got[field]["value"], cell["value"]), (
                    table_id,
                    field,
                    got[field],
                    cell,
                )
                # As people read it, too (rounded: the same on both engines).
                assert got[field]["text"] == cell["text"], (table_id, field, got[field], cell)


def test_preview_and_render_on_postgresql_show_what_duckdb_shows(
    engines: Engines, tmp_path: Path
) -> None:
    """`nudge preview` (the real planning step, rolled back) and `nudge render` (one customer's
    email as files) build the models into the preview schemas of either engine: the same
    decisions, reasons and samples, and the same email byte for byte."""
    ((customer, step),) = _postgres_rows(
        engines.database,
        "select customer_id, step from nudge.send_ledger"
        " where status = 'sent' and trigger = 'abandoned_cart' order by send_id limit 1",
    )
    later = (NEXT_HOUR + timedelta(hours=3)).isoformat()
    preview = ["preview", "--trigger", "abandoned_cart", "--as-of", later, "--json"]
    render = ["render", "--trigger", "abandoned_cart", "--step", step, "--customer", customer]
    render += ["--as-of", NEXT_HOUR.isoformat()]
    ledger = "select status, count(*) from nudge.send_ledger group by status order by status"
    before = _postgres_rows(engines.database, ledger)
    # Both engines at once: each build has a target folder of its own (dbt_runner.seeded_target).
    envs = {"duckdb": engines.duckdb_env, "postgres": engines.postgres_env}
    runs = _finish(
        [
            process
            for engine, env in envs.items()
            for process in (
                nudge(*preview, env=env),
                nudge(*render, "--out", str(tmp_path / engine), env=env),
            )
        ]
    )
    results = {}
    for engine, (previewed, rendered) in zip(
        envs, zip(runs[::2], runs[1::2], strict=True), strict=True
    ):
        assert previewed.code == 0 and rendered.code == 0, previewed.err + rendered.err
        results[engine] = (json.loads(previewed.out), rendered.out)
    duck, pg = results["duckdb"], results["postgres"]
    assert pg[0] == duck[0]
    assert pg[0]["decisions"] or pg[0]["excluded"], pg[0]
    assert pg[1].replace(str(tmp_path / "postgres"), "") == duck[1].replace(
        str(tmp_path / "duckdb"), ""
    )
    for name in ("email.html", "email.txt", "headers.txt"):
        email = (tmp_path / "postgres" / name).read_bytes()
        assert email and email == (tmp_path / "duckdb" / name).read_bytes(), name
    # Neither sent nor wrote the ledger; the live tables were not touched.
    assert _postgres_rows(engines.database, ledger) == before
    assert engines.database.password not in pg[1] + json.dumps(pg[0])


def test_why_export_and_erase_on_postgresql(engines: Engines) -> None:
    """Last in this file: it erases a customer the ticks mailed."""
    ((customer, email),) = _postgres_rows(
        engines.database,
        "select customer_id, email from nudge.send_ledger"
        " where status = 'sent' and trigger = 'abandoned_cart' order by send_id limit 1",
    )
    why = _nudge(engines, "why", "--customer", customer, "--json")
    assert why.code == 0, why.err
    assert customer in why.out and '"sent"' in why.out
    export = _nudge(engines, "export", "--customer", customer)
    assert export.code == 0, export.err
    assert email in export.out

    erase = _nudge(engines, "erase", "--customer", customer)
    assert erase.code == 0, erase.out + erase.err
    # It says what it changed, and vacuumed those tables (counts as on DuckDB).
    pseudonymised = re.search(r"nudge\.send_ledger\s+(\d+)\s+sends pseudonymised", erase.out)
    assert pseudonymised and int(pseudonymised.group(1)) > 0, erase.out
    vacuumed = re.search(r"PostgreSQL: (\d+) changed tables vacuumed", erase.out)
    assert vacuumed and int(vacuumed.group(1)) >= 3, erase.out
    assert "1 address hashes added" in erase.out, erase.out
    # What nudge keeps is pseudonymised, the models' rows of the person are gone, and the
    # address is suppressed from now on.
    assert _postgres_rows(
        engines.database,
        f"select count(*) from nudge.send_ledger where customer_id = '{customer}'"
        f" or email = '{email}' or cast(context as text) like '%{email}%'",
    ) == [(0,)]
    (kept,) = _postgres_rows(
        engines.database,
        "select count(*), count(email), count(context) from nudge.send_ledger"
        " where customer_id like 'erased:%'",
    )
    assert kept[0] > 0 and kept[1:] == (0, 0)
    carts = "audience.abandoned_cart_eligibility"
    assert _postgres_rows(
        engines.database, f"select count(*) from {carts} where customer_id = '{customer}'"
    ) == [(0,)]
    assert _postgres_rows(engines.database, "select count(*) from nudge.erasures") == [(1,)]
    assert ("erasure",) in _postgres_rows(engines.database, "select action from nudge.audit_log")
    # The shop's raw rows are the shop's: nudge prints the delete, it does not run it.
    assert f"delete from raw.customers where customer_id in ('{customer}');" in erase.out
    again = _nudge(engines, "erase", "--customer", customer)
    assert again.code == 0 and "already" in again.out, again.out + again.err
