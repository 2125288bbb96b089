"""Provider events between the service and the warehouse: stored once in the landing store,
drained once (whatever dies in between), and honoured by the push before any tick drains them."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.events import drain
from dagster_project.landing import LandingStore
from dagster_project.links import LinkSettings
from dagster_project.providers import OutboxProvider
from dagster_project.sequences import parse_sequence
from dagster_project.warehouse import connect
from dagster_project.webhooks import EmailEvent
from tests.support.factories import (
    AS_OF,
    CART_SPEC,
    cart_row,
    dispatch,
    ensure_staging,
    write_eligibility,
)

LINKS = LinkSettings.build(public_url="https://nudge.shop.example", secret="k" * 40)


def _event(
    n: int | str,
    kind: str = "delivered",
    *,
    email: str = "someone@example.com",
    bounce_type: str | None = None,
    minutes: int = 0,
    send_id: str | None = "s1",
) -> EmailEvent:
    return EmailEvent(
        event_id=f"sendgrid:{n}",
        provider="sendgrid",
        provider_event_id=str(n),
        send_id=send_id,
        email=email,
        event_type=kind,
        bounce_type=bounce_type,
        is_machine_open=False,
        url=None,
        occurred_at=AS_OF + timedelta(minutes=minutes),
        payload=json.dumps({"event": kind}),
    )


@pytest.fixture
def store(tmp_path: Path) -> LandingStore:
    return LandingStore(tmp_path / "landing.sqlite")


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(connection)
    return connection


def test_a_redelivered_event_is_stored_once(store: LandingStore) -> None:
    assert store.record_events([_event(1), _event(2)]) == 2
    assert store.record_events([_event(2), _event(3)]) == 1
    assert sorted(e.event.event_id for e in store.undrained_events()) == [
        "sendgrid:1",
        "sendgrid:2",
        "sendgrid:3",
    ]


def test_a_drain_that_dies_before_marking_the_store_counts_each_event_once(
    store: LandingStore, con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.record_events([_event(i) for i in range(5)])

    def dies(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed between the warehouse commit and the store")

    monkeypatch.setattr(store, "mark_events_drained", dies)
    with pytest.raises(KeyboardInterrupt):
        drain(con, store)
    # The warehouse committed; the store still says undrained.
    assert con.execute("select count(*) from nudge.email_events").fetchall() == [(5,)]
    assert len(store.undrained_events()) == 5
    monkeypatch.undo()
    again = drain(con, store)
    assert (again.events, again.already_there) == (0, 5)
    assert con.execute("select count(*) from nudge.email_events").fetchall() == [(5,)]
    assert store.undrained_events() == []
    # Events that name no send nudge made are kept and counted.
    assert again.unmatched == 5


def test_a_drain_with_nothing_to_do_does_nothing(
    store: LandingStore, con: duckdb.DuckDBPyConnection
) -> None:
    drained = drain(con, store)
    assert (drained.events, drained.already_there, drained.unmatched) == (0, 0, 0)


def test_only_hard_bounces_complaints_and_unsubscribes_are_opt_outs(store: LandingStore) -> None:
    store.record_events(
        [
            _event(1, "bounced", bounce_type="hard", email="a@example.com"),
            _event(2, "bounced", bounce_type="soft", email="b@example.com"),
            _event(3, "complained", email="c@example.com"),
            _event(4, "unsubscribed", email="d@example.com"),
            _event(5, "opened", email="e@example.com"),
            _event(6, "clicked", email="f@example.com"),
        ]
    )
    found = store.opt_outs_for(
        [
            "A@Example.com",
            "b@example.com",
            "c@example.com",
            "d@example.com",
            "e@example.com",
            "f@example.com",
            "nobody@example.com",
        ]
    )
    assert sorted(e.event_id for e in found) == ["sendgrid:1", "sendgrid:3", "sendgrid:4"]


def _statuses(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(
        con.execute(
            "select customer_id, status || ':' || coalesce(reason, '') from nudge.send_ledger"
        ).fetchall()
    )


def test_a_bounce_reported_after_the_build_stops_the_push_before_any_drain(
    tmp_path: Path, store: LandingStore, con: duckdb.DuckDBPyConnection
) -> None:
    """A hard bounce, a complaint and an unsubscribe at the provider, reported a second before
    the push for the recipients' addresses (cart_row mails <key>@example.com), stop their
    emails; an open does not."""
    ensure_staging(con)
    write_eligibility(
        con, [cart_row(k) for k in ("bounced", "complained", "unsubscribed", "opened", "fine")]
    )
    store.record_events(
        [
            _event(1, "bounced", bounce_type="hard", email="bounced@example.com", minutes=1),
            _event(2, "complained", email="COMPLAINED@example.com".lower(), minutes=1),
            _event(3, "unsubscribed", email="unsubscribed@example.com", minutes=1),
            _event(4, "opened", email="opened@example.com", minutes=1),
        ]
    )
    summary = dispatch(
        con,
        OutboxProvider(tmp_path / "outbox"),
        consent_cutoff=AS_OF + timedelta(minutes=2),
        links=LINKS,
        pending=store,
    )
    assert _statuses(con) == {
        "cust_bounced": "skipped:suppressed_before_send",
        "cust_complained": "skipped:suppressed_before_send",
        "cust_unsubscribed": "skipped:unsubscribed_before_send",
        "cust_opened": "sent:",
        "cust_fine": "sent:",
    }
    assert summary.sent == 2


def test_a_provider_unsubscribe_does_not_stop_transactional_mail_but_a_bounce_does(
    tmp_path: Path, store: LandingStore, con: duckdb.DuckDBPyConnection
) -> None:
    transactional = replace(
        CART_SPEC,
        sequence=parse_sequence(
            "abandoned_cart",
            {"category": "transactional", "steps": [{"name": "reminder", "delay": "1h"}]},
            "test",
        ),
    )
    ensure_staging(con)
    write_eligibility(
        con, [cart_row(k, category="transactional") for k in ("bounced", "unsubscribed")]
    )
    store.record_events(
        [
            _event(1, "bounced", bounce_type="hard", email="bounced@example.com"),
            _event(2, "unsubscribed", email="unsubscribed@example.com"),
        ]
    )
    dispatch(
        con,
        OutboxProvider(tmp_path / "outbox"),
        spec=transactional,
        consent_cutoff=AS_OF + timedelta(minutes=2),
        links=LINKS,
        pending=store,
    )
    assert _statuses(con) == {
        "cust_bounced": "skipped:suppressed_before_send",
        "cust_unsubscribed": "sent:",
    }


def _earlier_send(con: duckdb.DuckDBPyConnection, send_id: str, customer: str, email: str) -> None:
    con.execute(
        "insert into nudge.send_ledger (send_id, trigger, trigger_key, step, customer_id, email,"
        " status, provider, planned_at, updated_at) values"
        " (?, 'welcome', ?, 'day_0', ?, ?, 'sent', 'sendgrid', ?, ?)",
        [send_id, customer, customer, email, AS_OF, AS_OF],
    )


@pytest.mark.parametrize("drained_since_the_build", [False, True])
def test_events_that_name_only_their_send_or_an_old_address_still_stop_the_person(
    tmp_path: Path,
    store: LandingStore,
    con: duckdb.DuckDBPyConnection,
    drained_since_the_build: bool,
) -> None:
    """Found in review: the push matched the store's events by the message's address only. A
    complaint naming only its send, or the address a customer has since left, is the person's
    word; a hard bounce on an address they left is not about their new one.

    Found in review again (``drained_since_the_build``): the 5-minute transactional job drains
    the store between the hourly tick's dbt build and its push; such events were then in
    neither the tables the push read (built before) nor the store's undrained ones, and the push
    mailed the person who had complained."""
    ensure_staging(con)
    write_eligibility(con, [cart_row(k) for k in ("noaddr", "moved", "moved_bounce", "fine")])
    _earlier_send(con, "w-noaddr", "cust_noaddr", "noaddr@example.com")
    _earlier_send(con, "w-moved", "cust_moved", "old-moved@example.com")
    _earlier_send(con, "w-bounce", "cust_moved_bounce", "old-bounce@example.com")
    store.record_events(
        [
            replace(_event(1, "complained", minutes=1, send_id="w-noaddr"), email=None),
            _event(2, "unsubscribed", email="old-moved@example.com", send_id="w-moved"),
            _event(
                3, "bounced", bounce_type="hard", email="old-bounce@example.com", send_id="w-bounce"
            ),
        ]
    )
    if drained_since_the_build:
        # Another run's drain: the consent tables (ensure_staging) were built before it.
        drain(con, store)
    dispatch(
        con,
        OutboxProvider(tmp_path / "outbox"),
        consent_cutoff=AS_OF + timedelta(minutes=2),
        links=LINKS,
        pending=store,
    )
    statuses = dict(
        con.execute(
            "select customer_id, status || ':' || coalesce(reason, '') from nudge.send_ledger"
            " where trigger = 'abandoned_cart'"
        ).fetchall()
    )
    assert statuses == {
        "cust_noaddr": "skipped:suppressed_before_send",
        "cust_moved": "skipped:unsubscribed_before_send",
        "cust_moved_bounce": "sent:",
        "cust_fine": "sent:",
    }


def test_recent_opt_outs_are_the_undrained_and_those_drained_within_a_day(
    store: LandingStore, con: duckdb.DuckDBPyConnection
) -> None:
    store.record_events([_event(1, "complained"), _event(2, "opened")])
    drain(con, store)
    assert [e.event_id for e in store.recent_opt_outs()] == ["sendgrid:1"]
    # Long drained, they are the warehouse's business (its tables are rebuilt every run).
    later = datetime.now(UTC) + timedelta(days=2)
    assert store.recent_opt_outs(now=later) == []


def test_the_store_keeps_only_opt_outs_once_drained(
    store: LandingStore, con: duckdb.DuckDBPyConnection
) -> None:
    """Opens and clicks are many and the push never reads them: once in the warehouse they
    leave the store; an opt-out stays (30 days) for the push-time re-check by address."""
    store.record_events(
        [
            _event(1, "opened", email="a@example.com"),
            _event(2, "clicked", email="a@example.com"),
            _event(3, "complained", email="a@example.com"),
        ]
    )
    drain(con, store)
    assert [e.event_id for e in store.opt_outs_for(["a@example.com"])] == ["sendgrid:3"]
    with sqlite3.connect(store.path) as db:
        assert db.execute("select event_id from email_events").fetchall() == [("sendgrid:3",)]
    assert con.execute("select count(*) from nudge.email_events").fetchall() == [(3,)]
