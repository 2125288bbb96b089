"""The main job end to end: a generated warehouse, real dbt builds, real Dagster runs, and
SendGrid requests over loopback to a local server that counts what it received."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dagster_project.cli import main
from dagster_project.config import DBT_PROJECT_DIR, Settings
from dagster_project.dbt_runner import TARGET_DIR, dbt_executable, parse_cache
from dagster_project.demo_data import generate_to_file
from dagster_project.providers import ProviderSettings
from dagster_project.tick import TickOutcome, run_tick
from dagster_project.triggers import project_triggers
from tests.support.esp_server import EspServer
from tests.support.mirrors import send_id
from tests.support.sendgrid_schema import validate_sendgrid_payload

pytestmark = pytest.mark.dbt

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
API_KEY = "SG.e2e-secret-key-value"


@dataclass
class Ticks:
    settings: Settings
    server: EspServer
    first: TickOutcome
    second: TickOutcome
    received_after_two: list[str]


@pytest.fixture(scope="module")
def ticks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ticks]:
    tmp = tmp_path_factory.mktemp("e2e")
    warehouse = tmp / "warehouse.duckdb"
    generate_to_file(warehouse, customers=600, end=END)
    # A context: a setup that raises leaves none of these to the next module on this worker.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUDGE_ESP_API_KEY", API_KEY)
        # A real provider: marketing links must point at a public https service.
        mp.setenv("NUDGE_LINK_SECRET", "e2e-link-secret-" + "k" * 32)
        mp.setenv("NUDGE_PUBLIC_URL", "https://nudge.shop.example")
        # Fewer models at once than the default 4 (a small machine's setting): dbt says so.
        mp.setenv("NUDGE_DBT_THREADS", "2")
        with EspServer(api_key=API_KEY) as server:
            settings = Settings(
                warehouse=warehouse,
                provider=ProviderSettings(
                    esp="sendgrid", base_url=server.url, api_key=API_KEY, outbox_dir=tmp / "outbox"
                ),
                from_email="Shop <shop@example.com>",
                dagster_home=tmp / "dagster_home",
            )
            first = run_tick(
                (END - timedelta(hours=1)).isoformat(), settings=settings, allow_late=True
            )
            # Verbose, and dbt's debug events: they reach Dagster's compute logs, where a test
            # reads how dbt parsed the project.
            mp.setenv("DBT_LOG_LEVEL", "debug")
            second = run_tick(END.isoformat(), settings=settings, allow_late=True, verbose=True)
            mp.delenv("DBT_LOG_LEVEL")
            yield Ticks(settings, server, first, second, server.received_send_ids())


def test_a_tick_leaves_no_dbt_target_folder_behind(ticks: Ticks) -> None:
    """Found in review: every dagster-dbt build kept its own ~10 MB folder under dbt/target,
    gigabytes a day at one hourly and eleven 5-minute runs an hour."""
    for outcome in (ticks.first, ticks.second):
        assert outcome.success, outcome.error
        assert list(TARGET_DIR.glob(f"nudge_dbt_models-{outcome.run_id[:7]}-*")) == []


def test_the_second_tick_reuses_the_first_ticks_dbt_parse(ticks: Ticks) -> None:
    """Found while profiling the suite: dbt parses the whole project again when its saved parse
    was made under another profile (another warehouse), and each build's fresh parse went away
    with its target folder, so every tick parsed in full (4-9 s). The warehouse keeps its own."""
    assert parse_cache(ticks.settings.warehouse).is_file()
    # What dbt printed during the second tick, as Dagster's compute logs keep it.
    logs = ticks.settings.dagster_home / "storage" / ticks.second.run_id / "compute_logs"
    printed = "".join(path.read_text() for path in sorted(logs.glob("*.out")))
    assert "Running with dbt" in printed
    # dbt says this only once it has accepted the saved parse (a debug event).
    assert "Partial parsing enabled" in printed
    assert "Unable to do partial parsing" not in printed
    # The profile's threads come from NUDGE_DBT_THREADS.
    assert "Concurrency: 2 threads" in printed


def _ledger(settings: Settings, query: str) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_two_ticks_succeed_and_report_every_trigger(ticks: Ticks) -> None:
    for outcome in (ticks.first, ticks.second):
        assert outcome.success, outcome.error
        assert [t["trigger"] for t in outcome.triggers] == [
            "abandoned_cart",
            "birthday",
            "browse_abandonment",
            "confirm_subscription",
            "order_confirmation",
            "post_purchase_review",
            "re_engagement",
            "shipping_notification",
            "signup_anniversary",
            "welcome",
            "win_back",
        ]
    first = {t["trigger"]: t for t in ticks.first.triggers}
    # The generated data always has due carts and lapsed customers in the first tick.
    assert first["abandoned_cart"]["sent"] > 0
    assert first["win_back"]["sent"] > 0
    # ...and orders and parcels of the last hours: transactional mail goes out with the rest.
    assert first["order_confirmation"]["sent"] > 0
    assert first["shipping_notification"]["sent"] > 0
    for outcome in (ticks.first, ticks.second):
        # Guards, duplicate deliveries, failure rate: every asset check passed.
        assert outcome.failed_checks == []
    for t in ticks.first.triggers + ticks.second.triggers:
        assert t["outcome"] == "ok"
        assert t["candidates"] == t["eligible"] + sum(t["excluded"].values())
        settled = t["sent"] + t["failed"] + t["unknown"] + t["expired"] + t["skipped"]
        assert t["new"] + t["resumed"] + t["skipped_at_plan"] == settled + t["waiting_quiet_hours"]
        # Every eligible row of the tick was planned, deferred by the frequency cap or held by
        # a guard: none fell through.
        assert t["eligible"] == t["new"] + t["deferred"] + t["held"]


def test_server_received_each_send_exactly_once_and_the_ledger_agrees(ticks: Ticks) -> None:
    received = ticks.received_after_two
    assert len(received) == len(set(received))
    reported = sum(t["sent"] for t in ticks.first.triggers + ticks.second.triggers)
    assert len(received) == reported
    sent_in_ledger = {
        r[0]
        for r in _ledger(
            ticks.settings, "select send_id from nudge.send_ledger where status = 'sent'"
        )
    }
    assert sent_in_ledger == set(received)
    # The provider's message id is recorded for every sent row.
    missing = _ledger(
        ticks.settings,
        "select count(*) from nudge.send_ledger "
        "where status = 'sent' and provider_message_id is null",
    )
    assert missing == [(0,)]


def test_every_request_is_valid_against_sendgrids_published_schema(ticks: Ticks) -> None:
    requests = ticks.server.send_requests()
    assert requests
    for request in requests:
        validate_sendgrid_payload(request.body)
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        (personalization,) = request.body["personalizations"]
        assert len(personalization["to"]) == 1
        args = set(personalization["custom_args"])
        assert {"send_id", "trigger", "step"} <= args <= {"send_id", "trigger", "step", "variant"}


def _cli_environment(ticks: Ticks, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """`nudge run` from this process on the fixture's warehouse and SendGrid server."""
    s = ticks.settings
    for key, value in {
        "NUDGE_WAREHOUSE": str(s.warehouse),
        "NUDGE_ESP": "sendgrid",
        "NUDGE_ESP_BASE_URL": s.provider.base_url or "",
        "NUDGE_ESP_API_KEY": API_KEY,
        "NUDGE_OUTBOX_DIR": str(s.outbox_dir),
        **extra,
    }.items():
        monkeypatch.setenv(key, value)


def test_rerunning_the_last_tick_from_the_cli_sends_nothing(
    ticks: Ticks, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _cli_environment(ticks, monkeypatch, NUDGE_PUBLIC_URL="https://nudge.shop.example")
    before = len(ticks.server.received_send_ids())
    code = main(["run", "--as-of", END.isoformat(), "--json", "--allow-late"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out)
    assert summary["success"] is True
    assert all(t["new"] == 0 and t["sent"] == 0 for t in summary["triggers"])
    assert sum(t["already_sent"] for t in summary["triggers"]) > 0
    assert len(ticks.server.received_send_ids()) == before


def test_secrets_and_addresses_stay_out_of_ledger_and_metadata(ticks: Ticks) -> None:
    dumped = _ledger(ticks.settings, "select * from nudge.send_ledger")
    assert API_KEY not in repr(dumped)
    metadata = json.dumps([ticks.first.to_dict(), ticks.second.to_dict()])
    assert API_KEY not in metadata
    emails = [
        r[0]
        for r in _ledger(
            ticks.settings, "select email from staging.stg_raw__customers where email like '%@%'"
        )
    ]
    assert emails and not any(email in metadata for email in emails)


def test_python_send_id_matches_the_dbt_macro(ticks: Ticks) -> None:
    rows = _ledger(
        ticks.settings,
        "select send_id, trigger, trigger_key, step from audience.abandoned_cart_eligibility "
        "union all select send_id, trigger, trigger_key, step from audience.birthday_eligibility",
    )
    assert rows
    assert all(send_id(t, k, s) == sid for sid, t, k, s in rows)


def test_marketing_through_a_real_provider_without_a_public_unsubscribe_link_fails_loudly(
    ticks: Ticks, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _cli_environment(ticks, monkeypatch)
    # No NUDGE_PUBLIC_URL: the links would point at this machine's loopback address.
    before = len(ticks.server.received_send_ids())
    code = main(["run", "--as-of", (END + timedelta(hours=1)).isoformat(), "--allow-late"])
    captured = capsys.readouterr()
    assert code == 1
    assert "NUDGE_PUBLIC_URL" in captured.out + captured.err
    assert len(ticks.server.received_send_ids()) == before


def test_model_and_column_docs_are_persisted_for_bi_tools(ticks: Ticks) -> None:
    comment = _ledger(
        ticks.settings,
        "select comment from duckdb_columns() where schema_name = 'audience' "
        "and table_name = 'abandoned_cart_eligibility' and column_name = 'exclusion_reason'",
    )
    assert comment and "already_sent" in comment[0][0]
    undocumented = _ledger(
        ticks.settings,
        "select table_name, column_name from duckdb_columns() "
        "where schema_name in ('staging', 'intermediate', 'triggers', 'audience') "
        "and comment is null",
    )
    # An eligibility table passes its trigger's entry columns through: they are documented
    # once, on the trigger model (models/triggers/<trigger>.yml), and commented there.
    documented_on_trigger = {
        (f"{table}_eligibility", column)
        for table, column in _ledger(
            ticks.settings,
            "select table_name, column_name from duckdb_columns() "
            "where schema_name = 'triggers' and comment is not null",
        )
    }
    assert [u for u in undocumented if u not in documented_on_trigger] == []
    relations = _ledger(
        ticks.settings,
        "select table_name, comment from duckdb_tables() "
        "where schema_name in ('staging', 'intermediate', 'triggers', 'audience') "
        "union all select view_name, comment from duckdb_views() "
        "where schema_name in ('staging', 'intermediate')",
    )
    # 4 staging views and 2 tables (base_raw__events, stg_raw__customers), 1 intermediate view
    # and 13 tables (the tick's: the reporting job builds the attribution models), 11 triggers
    # and their 11 eligibility tables.
    assert len(relations) == 42
    assert all(comment for _name, comment in relations)


def _dbt(ticks: Ticks, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dbt_executable(), *args, "--vars", json.dumps({"as_of": END.isoformat()})],
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, "NUDGE_WAREHOUSE": str(ticks.settings.warehouse)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_dbt_unit_tests_pass(ticks: Ticks) -> None:
    """The trigger rules' edge cases (boundaries, grace, time zones, 29 Feb) as dbt unit tests."""
    # dbt reads a unit test's input columns from the built relations; the hourly tick does not
    # build the reporting models, so create them empty (dbt's documented way).
    empty = _dbt(ticks, "run", "--select", "tag:nudge_reporting", "--empty")
    assert empty.returncode == 0, empty.stdout[-4000:]
    result = _dbt(ticks, "test", "--select", "test_type:unit")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "PASS=" in result.stdout and "ERROR=0" in result.stdout


def test_a_run_on_a_warehouse_without_raw_tables_fails_with_exit_code_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NUDGE_WAREHOUSE", str(tmp_path / "empty.duckdb"))
    monkeypatch.setenv("NUDGE_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("NUDGE_ESP", "outbox")
    assert main(["run", "--as-of", END.isoformat()]) == 1
    err = capsys.readouterr().err
    assert "run failed" in err and "has no raw.customers, raw.events, raw.subscriptions" in err


def test_a_held_trigger_fails_its_check_and_an_approval_releases_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    generate_to_file(warehouse, customers=400, end=END)
    monkeypatch.setenv("NUDGE_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("NUDGE_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("NUDGE_ESP", "outbox")
    monkeypatch.setenv("NUDGE_MASS_SEND_MAX", "2")
    tick = ["run", "--as-of", END.isoformat(), "--allow-late"]

    assert main(tick) == 3
    captured = capsys.readouterr()
    assert "HELD abandoned_cart:" in captured.err and "--approve abandoned_cart" in captured.err
    assert "nudge/send_abandoned_cart:mass_send_guard" in captured.out
    held = _ledger_rows(
        warehouse,
        "select count(*) from nudge.send_ledger where trigger in ('abandoned_cart', 'win_back')",
    )
    assert held == [(0,)]  # held: nothing planned, nothing sent
    runs = _ledger_rows(warehouse, "select trigger, outcome, held from nudge.runs order by 1")
    assert ("abandoned_cart", "held") in {(t, o) for t, o, _ in runs}

    approve = [a for t in project_triggers()[0] for a in ("--approve", t.name)]
    assert main([*tick, *approve, "--json"]) == 0
    released = json.loads(capsys.readouterr().out)
    assert released["failed_checks"] == []
    carts = next(t for t in released["triggers"] if t["trigger"] == "abandoned_cart")
    assert carts["outcome"] == "ok" and carts["sent"] > 2
    assert len(list((tmp_path / "outbox" / "abandoned_cart").glob("*.eml"))) == carts["sent"]
    # The release is in the audit trail, one row per approved trigger, naming the run.
    approvals = _ledger_rows(
        warehouse, "select subject, actor from nudge.audit_log where action = 'approve'"
    )
    assert {subject for subject, _ in approvals} == {t.name for t in project_triggers()[0]}
    assert all(actor == f"run:{released['run_id']}" for _, actor in approvals)


def _ledger_rows(warehouse: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()
