"""nudge erase, export and why on a real warehouse: generated data plus two planted customers,
a real tick of the Dagster job through the outbox (consent changes drained from a real landing
store), then the commands as an operator runs them, on a copy of the files per test.

Zorbaline (``ERASED``) signs up and fills a cart just before the tick: the cart reminder goes
out, the welcome email is deferred by the frequency cap. Yvonnick (``OPTED_OUT``) signs up and
unsubscribes through a one-click link before the tick: his welcome email is excluded.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.cli import main
from dagster_project.config import Settings
from dagster_project.demo_data import generate_to_file
from dagster_project.landing import LandingStore
from dagster_project.privacy import erase, erasure_hash, pseudonym
from dagster_project.providers import ProviderSettings
from dagster_project.tick import run_tick
from dagster_project.warehouse import compact
from dagster_project.webhooks import EmailEvent
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.dbt

TICK = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
LATER = TICK + timedelta(hours=1)


@dataclass(frozen=True)
class Planted:
    customer_id: str
    email: str
    first_name: str


ERASED = Planted("cus_9900001", "zorbaline.quist@example.net", "Zorbaline")
OPTED_OUT = Planted("cus_9900002", "yvonnick.drabble@example.org", "Yvonnick")
# After the erasure: the shop imports the erased address again, and a stranger signs up.
REIMPORTED = Planted("cus_9900003", "  Zorbaline.Quist@Example.NET ", "Zorbaline")
CONTROL = Planted("cus_9900004", "quillon.farthing@example.com", "Quillon")


def _plant(con: duckdb.DuckDBPyConnection, person: Planted, at: datetime, *, cart: bool) -> None:
    """A customer who signed up at ``at`` with marketing consent (and filled a cart)."""
    con.execute(
        "insert into raw.customers values (?, ?, ?, 'UTC', null, ?)",
        [person.customer_id, person.email, person.first_name, at],
    )
    con.execute(
        "insert into raw.subscriptions values (?, 'marketing', 'subscribed', ?)",
        [person.customer_id, at],
    )
    events = [("signed_up", at, {"source": "web"})]
    if cart:
        events.append(
            (
                "product_added",
                at + timedelta(minutes=1),
                {
                    "cart_id": f"cart_{person.customer_id}",
                    "product_id": "sku_0005",
                    "name": "Canvas Tote Bag",
                    "price": 19.5,
                    "quantity": 2,
                    "url": "https://shop.example/products/canvas-tote-bag",
                    "image_url": "https://cdn.shop.example/images/canvas-tote-bag.jpg",
                },
            )
        )
    for i, (name, when, properties) in enumerate(events):
        con.execute(
            "insert into raw.events values (?, ?, ?, ?, ?)",
            [
                f"ev_{person.customer_id}_{i}",
                person.customer_id,
                name,
                when,
                json.dumps(properties),
            ],
        )


def _provider_event(
    event_id: str, send_id: str | None, at: datetime, kind: str, url: str | None
) -> EmailEvent:
    """A SendGrid event about ERASED, its payload naming them as providers' payloads do."""
    payload = {"email": ERASED.email, "event": kind, "first_name": ERASED.first_name}
    return EmailEvent(
        event_id=f"sendgrid:{event_id}",
        provider="sendgrid",
        provider_event_id=event_id,
        send_id=send_id,
        email=ERASED.email,
        event_type=kind,
        bounce_type=None,
        is_machine_open=False,
        url=url,
        occurred_at=at,
        payload=json.dumps(payload),
    )


def _settings(folder: Path) -> Settings:
    return Settings(
        warehouse=folder / "warehouse.duckdb",
        provider=ProviderSettings(esp="outbox", outbox_dir=folder / "outbox"),
        dagster_home=folder.parent / "dagster_home",
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One generated warehouse after one real tick; tests work on copies of its folder."""
    mp = pytest.MonkeyPatch()
    for name in [n for n in os.environ if n.startswith("NUDGE_")]:
        if not name.startswith("NUDGE_REQUIRE_"):
            mp.delenv(name)
    mp.setenv("NUDGE_LINK_SECRET", "test-link-secret-" + "x" * 32)
    folder = tmp_path_factory.mktemp("privacy") / "base"
    folder.mkdir()
    settings = _settings(folder)
    generate_to_file(settings.warehouse, customers=300, end=TICK)
    con = duckdb.connect(str(settings.warehouse))
    try:
        _plant(con, ERASED, TICK - timedelta(hours=3), cart=True)
        _plant(con, OPTED_OUT, TICK - timedelta(hours=3), cart=False)
    finally:
        con.close()
    store = LandingStore(settings.landing_path)
    try:
        # What nudge serve would have recorded: drained by the tick.
        store.record(
            customer_id=ERASED.customer_id,
            list_name="marketing",
            status="subscribed",
            source="preference_page",
            send_id=None,
            now=TICK - timedelta(hours=2, minutes=30),
        )
        store.record(
            customer_id=OPTED_OUT.customer_id,
            list_name="marketing",
            status="unsubscribed",
            source="one_click",
            send_id=None,
            now=TICK - timedelta(hours=2),
        )
        # A provider's report about mail to the address, before the tick (drained by it).
        store.record_events(
            [_provider_event("delivered-old", None, TICK - timedelta(hours=2), "delivered", None)]
        )
        outcome = run_tick(TICK.isoformat(), settings=settings, allow_late=True)
        assert outcome.success, outcome.error
        # ...and a click on the reminder the tick sent, not drained yet.
        con = duckdb.connect(str(settings.warehouse))
        try:
            ((reminder,),) = con.execute(
                "select send_id from nudge.send_ledger where customer_id = ? and step = 'reminder'",
                [ERASED.customer_id],
            ).fetchall()
        finally:
            con.close()
        store.record_events(
            [
                _provider_event(
                    "click-1",
                    reminder,
                    TICK + timedelta(minutes=10),
                    "clicked",
                    f"https://shop.example/cart?c={ERASED.customer_id}",
                )
            ]
        )
        # ...and one the next tick has not drained yet.
        store.record(
            customer_id=ERASED.customer_id,
            list_name="marketing",
            status="unsubscribed",
            source="one_click",
            send_id=None,
            now=TICK + timedelta(minutes=20),
        )
    finally:
        store.close()
    yield folder
    mp.undo()


@dataclass(frozen=True)
class Copy:
    folder: Path
    settings: Settings

    @property
    def warehouse(self) -> Path:
        return self.settings.warehouse

    @property
    def outbox(self) -> Path:
        return self.settings.outbox_dir

    def query(self, statement: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.warehouse))
        try:
            return con.execute(statement, params or []).fetchall()
        finally:
            con.close()


@pytest.fixture
def copy(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Copy:
    folder = tmp_path / "w"
    shutil.copytree(base, folder)
    settings = _settings(folder)
    monkeypatch.setenv("NUDGE_WAREHOUSE", str(settings.warehouse))
    monkeypatch.setenv("NUDGE_OUTBOX_DIR", str(settings.outbox_dir))
    monkeypatch.chdir(tmp_path)  # `nudge render` writes ./.nudge/render/
    return Copy(folder, settings)


def _files(copy: Copy) -> list[Path]:
    """Every file nudge keeps beside the warehouse: the warehouse and its WAL, the landing
    store and its WAL, every file of the outbox, the lock, the hand-over journal."""
    files = [p for p in copy.folder.rglob("*") if p.is_file()]
    assert copy.settings.landing_path in files and copy.warehouse in files
    return files


def _holding(paths: list[Path], needle: str) -> list[Path]:
    return [p for p in paths if needle.lower().encode() in p.read_bytes().lower()]


def _delete_from_raw(copy: Copy, customer_id: str) -> None:
    """What the README tells the shop to do: delete the person from its raw tables."""
    for table in ("customers", "events", "subscriptions"):
        copy.query(f"delete from raw.{table} where customer_id = ?", [customer_id])


def _salt(copy: Copy) -> str:
    return str(copy.query("select salt from nudge.erasure_salt")[0][0])


# -- the tick did what the scenario says ------------------------------------------------------


def test_the_tick_mailed_the_cart_deferred_the_welcome_and_excluded_the_opt_out(
    copy: Copy,
) -> None:
    statuses = dict(
        copy.query(
            "select trigger || '/' || step, status from nudge.send_ledger where customer_id = ?",
            [ERASED.customer_id],
        )
    )
    assert statuses == {"abandoned_cart/reminder": "sent", "welcome/day_0": "deferred"}
    assert copy.query(
        "select exclusion_reason from audience.welcome_eligibility where customer_id = ?",
        [OPTED_OUT.customer_id],
    ) == [("unsubscribed",)]


# -- erase ------------------------------------------------------------------------------------


def test_erase_leaves_no_trace_of_the_person_and_keeps_everyone_else(
    copy: Copy, capsys: pytest.CaptureFixture[str]
) -> None:
    render = copy.folder.parent / ".nudge" / "render"
    for customer in (ERASED, OPTED_OUT):  # what `nudge render` writes
        out = render / f"abandoned_cart-reminder-{customer.customer_id}"
        out.mkdir(parents=True)
        (out / "headers.txt").write_text(
            f"To: {customer.email}\nSubject: Hi {customer.first_name}\n"
        )
    # Free text that quotes them: a provider's answer, the run log, an operator's note.
    (reminder,) = copy.query(
        "select send_id from nudge.send_ledger where customer_id = ? and status = 'sent'",
        [ERASED.customer_id],
    )[0]
    copy.query(
        "update nudge.send_events set error = ? where send_id = ? and status = 'sent'",
        [f"accepted for {ERASED.first_name} <{ERASED.email}>", reminder],
    )
    copy.query(
        "update nudge.runs set errors = to_json([?]) where trigger = 'abandoned_cart'",
        [f"{reminder}: soft bounce {ERASED.email.upper()} ({ERASED.first_name})"],
    )
    copy.query(
        "insert into nudge.audit_log values ('note-1', now(), 'note', 'cli:test', "
        "'abandoned_cart', ?)",
        [json.dumps({"note": f"{ERASED.email} called"})],
    )
    before = _files(copy)
    for needle in (ERASED.email, ERASED.first_name, ERASED.customer_id):
        assert _holding(before, needle), f"{needle} should be there before the erasure"
    ledger_rows = copy.query("select count(*) from nudge.send_ledger")[0][0]
    others = [
        email
        for (email,) in copy.query(
            "select email from nudge.send_ledger where status = 'sent' and customer_id != ?",
            [ERASED.customer_id],
        )
    ]
    assert others

    _delete_from_raw(copy, ERASED.customer_id)
    assert main(["erase", "--customer", ERASED.customer_id]) == 0
    out = capsys.readouterr().out

    after = _files(copy)
    for needle in (ERASED.email, ERASED.first_name, ERASED.customer_id):
        assert _holding(after, needle) == [], f"{needle} is still in {_holding(after, needle)}"
    assert not (render / f"abandoned_cart-reminder-{ERASED.customer_id}").exists()
    assert (render / f"abandoned_cart-reminder-{OPTED_OUT.customer_id}").exists()
    # Everyone else's emails are still in the outbox; the ledger keeps every row.
    outbox = [p for p in copy.outbox.rglob("*.eml")]
    for email in others:
        assert _holding(outbox, email), email
    assert copy.query("select count(*) from nudge.send_ledger")[0][0] == ledger_rows
    alias = pseudonym(_salt(copy), ERASED.customer_id)
    assert alias.startswith("erased:") and len(alias) == len("erased:") + 16
    assert copy.query(
        "select step, status, email, context from nudge.send_ledger where customer_id = ? "
        "order by step",
        [alias],
    ) == [("day_0", "skipped", None, None), ("reminder", "sent", None, None)]
    # The deferred welcome email will never go out, and its history says why.
    assert copy.query(
        "select e.status, e.reason from nudge.send_events e join nudge.send_ledger l "
        "using (send_id) where l.customer_id = ? and l.step = 'day_0' order by recorded_at desc "
        "limit 1",
        [alias],
    ) == [("skipped", "erased")]
    assert copy.query(
        "select customer_id from nudge.consent_changes where source = 'preference_page'"
    ) == [(alias,)]
    assert copy.query(
        "select error from nudge.send_events where send_id = ? and status = 'sent'", [reminder]
    ) == [("accepted for [erased] <[erased]>",)]
    assert copy.query(
        "select cast(errors as varchar) from nudge.runs where trigger = 'abandoned_cart'"
    ) == [(json.dumps([f"{reminder}: soft bounce [erased] ([erased])"], separators=(",", ":")),)]
    assert copy.query("select detail from nudge.audit_log where audit_id = 'note-1'") == [
        ('{"note": "[erased] called"}',)
    ]
    # The address is kept as a salted hash only: DuckDB's sha256(salt || email), the dbt macro.
    stored = copy.query("select email_hash from nudge.erasures")
    assert stored == [(erasure_hash(_salt(copy), ERASED.email),)]
    assert copy.query("select sha256(salt || ?) from nudge.erasure_salt", [ERASED.email]) == stored
    # The provider's report stays for deliverability, without the address or the payload;
    # the undrained click was drained first, then scrubbed likewise.
    assert copy.query(
        "select event_type, email, url, payload from nudge.email_events order by event_type"
    ) == [("clicked", None, None, None), ("delivered", None, None, None)]
    assert "compacted" in out and "no trace of the person" in out
    assert f"delete from raw.events where customer_id in ('{ERASED.customer_id}');" in out
    assert ERASED.email not in out


def test_an_erased_address_imported_again_is_never_mailed(
    copy: Copy, capsys: pytest.CaptureFixture[str]
) -> None:
    _delete_from_raw(copy, ERASED.customer_id)
    # Erased between the two ticks of simulated time (the models read consent as of a tick).
    erase(copy.settings, emails=[ERASED.email.upper()], now=TICK + timedelta(minutes=30))
    con = duckdb.connect(str(copy.warehouse))
    try:
        _plant(con, REIMPORTED, LATER - timedelta(minutes=30), cart=False)
        _plant(con, CONTROL, LATER - timedelta(minutes=30), cart=False)
    finally:
        con.close()

    outcome = run_tick(LATER.isoformat(), settings=copy.settings, allow_late=True)

    assert outcome.success, outcome.error
    columns = {
        name
        for (name,) in copy.query(
            "select column_name from information_schema.columns "
            "where table_schema = 'audience' and table_name = 'welcome_eligibility'"
        )
    }
    reasons = copy.query(
        "select exclusion_reason"
        + (", suppression_reason" if "suppression_reason" in columns else "")
        + " from audience.welcome_eligibility where customer_id = ?",
        [REIMPORTED.customer_id],
    )
    expected = ("suppressed", "erasure") if "suppression_reason" in columns else ("suppressed",)
    assert reasons == [expected]
    sent = copy.query(
        "select customer_id, step from nudge.send_ledger where status = 'sent' "
        "and customer_id in (?, ?)",
        [REIMPORTED.customer_id, CONTROL.customer_id],
    )
    assert sent == [(CONTROL.customer_id, "day_0")]  # the stranger got the same email
    assert _holding(_files(copy), ERASED.email) != []  # raw has the new import...
    outbox = [p for p in copy.outbox.rglob("*.eml")]
    assert _holding(outbox, "zorbaline.quist@example.net") == []  # ...the outbox never did
    assert _holding(outbox, CONTROL.email)
    assert main(["why", "--customer", REIMPORTED.customer_id, "--trigger", "welcome"]) == 0
    text = capsys.readouterr().out
    assert "their address was erased on 2026-06-01 11:30 UTC" in text
    assert "NOT SENT: suppressed" in text


def test_erasing_twice_or_a_stranger_changes_nothing_and_each_is_audited(
    copy: Copy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["erase", "--customer", ERASED.customer_id]) == 0
    first = capsys.readouterr().out
    assert "sends pseudonymised" in first and "raw.customers 1" in first
    snapshot = copy.query("select * exclude (updated_at) from nudge.send_ledger order by send_id")

    assert main(["erase", "--customer", ERASED.customer_id]) == 0
    assert "0 changes" in capsys.readouterr().out
    assert main(["erase", "--email", "nobody@nowhere.example"]) == 0
    assert "0 changes" in capsys.readouterr().out
    # Now the shop deletes its rows: the next erase (by address, found by its hash) wipes the
    # bytes that delete freed, with 0 changes.
    _delete_from_raw(copy, ERASED.customer_id)
    assert _holding([copy.warehouse], ERASED.email)
    assert main(["erase", "--email", ERASED.email]) == 0
    last = capsys.readouterr().out
    assert "0 changes" in last and "compacted" in last and "no trace" in last
    for needle in (ERASED.email, ERASED.first_name, ERASED.customer_id):
        assert _holding(_files(copy), needle) == [], needle

    assert (
        copy.query("select * exclude (updated_at) from nudge.send_ledger order by send_id")
        == snapshot
    )
    alias = pseudonym(_salt(copy), ERASED.customer_id)
    audits = copy.query(
        "select subject, detail from nudge.audit_log where action = 'erasure' order by occurred_at"
    )
    assert [subject for subject, _ in audits] == [alias, alias, None, None]
    details = [json.loads(detail) for _, detail in audits]
    assert details[0]["changes"]["nudge.send_ledger: sends pseudonymised"] == 2
    assert details[0]["raw_rows_left"] > 0 and details[3]["raw_rows_left"] == 0
    assert all(sum(d["changes"].values()) == 0 for d in details[1:])
    assert [d["suppressed"] for d in details] == [1, 0, 1, 0]  # the stranger's address too
    for _, detail in audits:
        assert ERASED.customer_id not in detail and ERASED.email not in detail
    # Every earlier audit row about the person now names the pseudonym.
    assert copy.query(
        "select count(*) from nudge.audit_log where subject = ?", [ERASED.customer_id]
    ) == [(0,)]

    assert main(["why", "--customer", ERASED.customer_id]) == 0
    assert "ERASED on" in capsys.readouterr().out
    assert main(["export", "--customer", ERASED.customer_id]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["erasure"]["erased"] is True and document["sends"] == []


def test_erase_needs_someone_to_erase(copy: Copy, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["erase"]) == 2
    assert "--customer" in capsys.readouterr().err


# -- export -----------------------------------------------------------------------------------


def test_export_has_the_sends_and_consent_history_of_a_mailed_customer(
    copy: Copy, capsys: pytest.CaptureFixture[str]
) -> None:
    target = copy.folder / "export.json"
    assert main(["export", "--customer", ERASED.customer_id, "--out", str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    document = json.loads(target.read_text())

    assert document["customer"]["email"] == ERASED.email
    assert document["customer"]["first_name"] == ERASED.first_name
    sends = {f"{s['trigger']}/{s['step']}": s for s in document["sends"]}
    assert set(sends) == {"abandoned_cart/reminder", "welcome/day_0"}
    reminder = sends["abandoned_cart/reminder"]
    assert reminder["status"] == "sent" and reminder["context"]["first_name"] == ERASED.first_name
    assert [e["status"] for e in reminder["events"]] == ["planned", "sent"]
    assert sends["welcome/day_0"]["reason"] == "frequency_cap_24h"
    assert datetime.fromisoformat(reminder["sent_as_of"]) == TICK
    consent = [(c["status"], c["source"], c["pending"]) for c in document["consent"]]
    assert consent == [
        ("subscribed", "preference_page", False),
        ("subscribed", "import", False),
        ("unsubscribed", "one_click", True),  # in the landing store, not drained yet
    ]
    assert [a["action"] for a in document["audit"]] == ["consent_change"]
    assert document["audit"][0]["detail"]["source"] == "preference_page"
    assert document["erasure"]["erased"] is False
    assert document["derived_tables"]["audience.abandoned_cart_eligibility"] >= 1
    # What the provider reported, drained by the tick (the click is not drained yet).
    assert [(e["event_type"], e["provider"]) for e in document["provider_events"]] == [
        ("delivered", "sendgrid")
    ]

    assert main(["export", "--customer", ERASED.customer_id]) == 0
    assert json.loads(capsys.readouterr().out)["sends"] == document["sends"]


# -- why --------------------------------------------------------------------------------------


def test_why_names_the_sent_and_the_deferred_step(
    copy: Copy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["why", "--customer", ERASED.customer_id]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    reminder = next(line for line in lines if "abandoned_cart/reminder" in line)
    assert "SENT by the tick of 2026-06-01 11:00 UTC via outbox" in reminder
    welcome = next(line for line in lines if "welcome/day_0" in line)
    assert "DEFERRED: frequency_cap_24h" in welcome
    assert "not drained yet" in text and ERASED.email not in text

    assert main(["why", "--customer", ERASED.customer_id, "--json"]) == 0
    entries = {
        f"{e['trigger']}/{e['step']}": e for e in json.loads(capsys.readouterr().out)["entries"]
    }
    assert entries["abandoned_cart/reminder"]["status"] == "sent"
    assert datetime.fromisoformat(entries["abandoned_cart/reminder"]["sent_as_of"]) == TICK
    assert entries["welcome/day_0"]["status"] == "deferred"
    assert entries["welcome/day_0"]["reason"] == "frequency_cap_24h"


def test_why_names_the_exclusion_and_the_consent_change_behind_it(
    copy: Copy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["why", "--customer", OPTED_OUT.customer_id, "--trigger", "welcome"]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if "welcome/day_0" in line)
    assert "NOT SENT: unsubscribed" in line and "one_click" in line

    assert main(["why", "--customer", OPTED_OUT.customer_id, "--trigger", "welcome", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    (entry,) = document["entries"]
    assert entry["status"] is None  # never in the ledger: the rules kept it out
    assert entry["exclusion_reason"] == "unsubscribed"
    assert entry["consent_status"] == "unsubscribed"
    assert entry["consent_change"]["source"] == "one_click"
    assert datetime.fromisoformat(entry["consent_change"]["changed_at"]) == TICK - timedelta(
        hours=2
    )
    if copy.query(
        "select column_name from information_schema.columns "
        "where table_name = 'welcome_eligibility' and column_name = 'consent_source'"
    ):
        assert entry["consent_source"] == "one_click"

    assert main(["why", "--customer", OPTED_OUT.customer_id, "--trigger", "nope"]) == 2


# -- the pieces -------------------------------------------------------------------------------


def test_erasure_hash_is_duckdbs_sha256_of_salt_and_address(
    con: duckdb.DuckDBPyConnection,
) -> None:
    ledger.ensure_ledger(con)
    salt = str(con.execute("select salt from nudge.erasure_salt").fetchall()[0][0])
    for email in ("zorbaline.quist@example.net", "ünïcødé@exämple.de", "o'neil+tag@x.io"):
        (expected,) = con.execute("select sha256(? || ?)", [salt, email]).fetchall()[0]
        assert erasure_hash(salt, email) == expected


def test_compact_keeps_every_object_comment_and_constraint(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))
    ledger.ensure_ledger(con)
    con.execute("comment on table nudge.send_ledger is 'the ledger'")
    con.execute("comment on column nudge.send_ledger.email is 'the address'")
    con.execute("create schema audience")
    con.execute("create view audience.v as select send_id from nudge.send_ledger")
    con.execute(
        "insert into nudge.send_ledger (send_id, trigger, trigger_key, step, customer_id, email,"
        " status, planned_at, updated_at) select 's' || i, 't', 'k', 'st', 'c', "
        "'secret' || i || '@example.com', 'sent', now(), now() from range(5000) as r(i)"
    )
    con.execute("delete from nudge.send_ledger where send_id = 's42'")
    con.close()
    assert b"secret42@" in warehouse.read_bytes()  # DuckDB does not zero freed blocks

    result = compact(warehouse)

    assert b"secret42@" not in warehouse.read_bytes()
    assert result.bytes_after <= result.bytes_before
    con = duckdb.connect(str(warehouse))
    try:
        assert con.execute("select count(*) from audience.v").fetchall() == [(4999,)]
        assert con.execute(
            "select comment from duckdb_tables() where table_name = 'send_ledger'"
        ).fetchall() == [("the ledger",)]
        assert con.execute(
            "select comment from duckdb_columns() where column_name = 'email' "
            "and table_name = 'send_ledger'"
        ).fetchall() == [("the address",)]
        with pytest.raises(duckdb.ConstraintException):  # the primary key survived
            con.execute(
                "insert into nudge.send_ledger (send_id, trigger, trigger_key, step, "
                "customer_id, status, planned_at, updated_at) "
                "values ('s1', 't', 'k', 'st', 'c', 'sent', now(), now())"
            )
    finally:
        con.close()


def test_erase_covers_every_schema_whose_models_name_a_customer() -> None:
    """A model holding customer_id (or the ledger's keys that embed it) must lie in a schema
    nudge erase scrubs: reporting.fct_sends was once left out."""
    from dagster_project.dbt_runner import ensure_manifest
    from dagster_project.privacy.people import DBT_SCHEMAS

    manifest = json.loads(ensure_manifest().read_text())
    holding = {
        node["schema"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and "customer_id" in node.get("columns", {})
    }
    assert "reporting" in holding
    assert holding <= set(DBT_SCHEMAS)


def test_erase_on_postgresql_counts_the_persons_rows_in_a_raw_materialized_view(
    postgres_cluster: PostgresServer, tmp_path: Path
) -> None:
    """nudge never deletes from the shop's raw schema; it tells the operator which raw
    relations still hold the person. On PostgreSQL those are often materialized views over what
    a loader writes, which information_schema does not list: they must be named all the same."""
    server = postgres_cluster.new_database("erase_raw_matview")
    con = server.warehouse(tmp_path / "state")
    try:
        ledger.ensure_ledger(con)
        con.execute("create schema raw")
        con.execute(
            "create table raw.loaded_customers (customer_id varchar, email varchar,"
            " first_name varchar)"
        )
        con.execute(
            "insert into raw.loaded_customers values"
            " ('c1', 'ann@example.com', 'Ann'), ('c2', 'bob@example.com', 'Bob')"
        )
        con.execute("create materialized view raw.customers as select * from raw.loaded_customers")
        # One the shop has not refreshed yet: reading it is an error, so it is not read.
        con.execute(
            "create materialized view raw.customers_next as"
            " select * from raw.loaded_customers with no data"
        )
    finally:
        con.close()
    settings = Settings(
        warehouse=tmp_path / "state" / "shop",
        postgres=server.settings(tmp_path / "state"),
        provider=ProviderSettings(esp="outbox", outbox_dir=tmp_path / "outbox"),
        dagster_home=tmp_path / "dagster_home",
    )

    result = erase(settings, emails=["ann@example.com"])

    assert result.raw_rows == {"raw.customers": 1, "raw.loaded_customers": 1}
