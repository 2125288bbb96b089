"""Consent changes from nudge serve: the landing store, the drain into the warehouse, and the
push-time re-check that honours a change stored a second before the push."""

from __future__ import annotations

import email
from datetime import timedelta
from pathlib import Path

import pytest

from dagster_project import ledger
from dagster_project.consent import _insert, drain
from dagster_project.landing import LandingStore
from dagster_project.links import LinkSettings
from dagster_project.providers import OutboxProvider
from dagster_project.warehouse import connect
from tests.support.factories import (
    AS_OF,
    add_subscription,
    cart_row,
    dispatch,
    ensure_staging,
    write_eligibility,
)

LINKS = LinkSettings.build(public_url="https://nudge.shop.example", secret="k" * 40)


@pytest.fixture
def store(tmp_path: Path) -> LandingStore:
    return LandingStore(tmp_path / "landing.sqlite")


def _record(store: LandingStore, customer: str, status: str = "unsubscribed", **kw) -> None:
    store.record(
        customer_id=customer,
        list_name="marketing",
        status=status,
        source=kw.pop("source", "one_click"),
        send_id=kw.pop("send_id", None),
        **kw,
    )


def test_a_drain_moves_every_change_once_even_when_repeated_after_a_crash(
    tmp_path: Path, store: LandingStore
) -> None:
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    for customer in ("a", "b", "c"):
        _record(store, customer, send_id=f"s_{customer}")
    # A tick that died after committing to the warehouse and before marking the store.
    _insert(con, store.undrained(), AS_OF)
    drained = drain(con, store)
    assert (drained.changes, drained.already_there) == (0, 3)
    assert drain(con, store).changes == 0  # nothing left
    rows = con.execute(
        "select customer_id, status, source, send_id from nudge.consent_changes order by 1"
    ).fetchall()
    assert rows == [
        ("a", "unsubscribed", "one_click", "s_a"),
        ("b", "unsubscribed", "one_click", "s_b"),
        ("c", "unsubscribed", "one_click", "s_c"),
    ]
    audit = con.execute(
        "select action, actor, subject from nudge.audit_log order by subject"
    ).fetchall()
    assert audit == [("consent_change", "service", c) for c in ("a", "b", "c")]


def test_a_change_stored_but_not_drained_is_honoured_by_the_push(
    tmp_path: Path, store: LandingStore
) -> None:
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    ensure_staging(con)
    write_eligibility(con, [cart_row("said_no"), cart_row("fine")])
    # One second before the push, after the tick's dbt build; no tick has drained it.
    _record(store, "cust_said_no", now=AS_OF + timedelta(seconds=59))
    summary = dispatch(
        con,
        OutboxProvider(tmp_path / "outbox"),
        consent_cutoff=AS_OF + timedelta(minutes=1),
        links=LINKS,
        pending=store,
    )
    statuses = dict(
        con.execute(
            "select customer_id, status || ':' || coalesce(reason, '') from nudge.send_ledger"
        ).fetchall()
    )
    assert statuses == {"cust_said_no": "skipped:unsubscribed_before_send", "cust_fine": "sent:"}
    assert summary.sent == 1


def test_a_replayed_tick_still_honours_an_opt_out_made_after_its_instant(
    tmp_path: Path, store: LandingStore
) -> None:
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    ensure_staging(con)
    write_eligibility(con, [cart_row("said_no"), cart_row("came_back")])
    # Both changes are "after" the replayed instant, but the email would leave now.
    later = AS_OF + timedelta(days=30)
    _record(store, "cust_said_no", now=later)
    add_subscription(con, "cust_came_back", "unsubscribed", AS_OF - timedelta(days=1))
    _record(store, "cust_came_back", "subscribed", source="preference_page", now=later)
    dispatch(
        con, OutboxProvider(tmp_path / "outbox"), consent_cutoff=AS_OF, links=LINKS, pending=store
    )
    statuses = dict(
        con.execute(
            "select customer_id, status || ':' || coalesce(reason, '') from nudge.send_ledger"
        ).fetchall()
    )
    # The opt-out counts; the resubscribe is the replay's future (the import's no still holds).
    assert statuses == {
        "cust_said_no": "skipped:unsubscribed_before_send",
        "cust_came_back": "skipped:unsubscribed_before_send",
    }


def test_a_resubscribe_on_the_page_after_an_import_unsubscribe_lets_mail_through(
    tmp_path: Path, store: LandingStore
) -> None:
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    write_eligibility(con, [cart_row("back")])
    add_subscription(con, "cust_back", "unsubscribed", AS_OF + timedelta(seconds=10))
    _record(
        store,
        "cust_back",
        "subscribed",
        source="preference_page",
        now=AS_OF + timedelta(seconds=20),
    )
    summary = dispatch(
        con,
        OutboxProvider(tmp_path / "outbox"),
        consent_cutoff=AS_OF + timedelta(minutes=1),
        links=LINKS,
        pending=store,
    )
    assert summary.sent == 1


def test_marketing_mail_carries_the_one_click_headers_and_the_same_link_in_its_body(
    tmp_path: Path,
) -> None:
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    ensure_staging(con)
    write_eligibility(con, [cart_row("ann")])
    dispatch(con, OutboxProvider(tmp_path / "outbox"), links=LINKS)
    (eml,) = (tmp_path / "outbox").rglob("*.eml")
    message = email.message_from_bytes(eml.read_bytes())
    link = message["List-Unsubscribe"].strip("<>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    claim = LINKS.verify(link.rsplit("/", 1)[1])
    assert (claim.customer_id, claim.list) == ("cust_ann", "marketing")
    bodies = [part.get_payload(decode=True).decode() for part in message.walk()
              if part.get_content_maintype() == "text"]  # fmt: skip
    assert bodies and all(link in body for body in bodies)


def test_a_second_click_after_an_import_resubscribed_them_is_still_the_latest_word(
    tmp_path: Path, store: LandingStore
) -> None:
    """The same one-click again is one change, moved to its new instant: an import that
    subscribed the person in between must not outlive their second "no"."""
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    _record(store, "cust_twice", send_id="s1", now=AS_OF)
    drain(con, store, now=AS_OF + timedelta(seconds=1))
    add_subscription(con, "cust_twice", "subscribed", AS_OF + timedelta(minutes=2))
    _record(store, "cust_twice", send_id="s1", now=AS_OF + timedelta(minutes=5))
    assert drain(con, store).changes == 1  # the same change, moved
    rows = con.execute("select changed_at from nudge.consent_changes").fetchall()
    assert [r[0] for r in rows] == [AS_OF + timedelta(minutes=5)]
    write_eligibility(con, [cart_row("twice")])
    dispatch(
        con,
        OutboxProvider(tmp_path / "outbox"),
        consent_cutoff=AS_OF + timedelta(minutes=6),
        links=LINKS,
        pending=store,
    )
    status = con.execute("select status, reason from nudge.send_ledger").fetchall()
    assert status == [("skipped", "unsubscribed_before_send")]


def test_a_second_click_while_a_drain_copies_the_first_still_reaches_the_warehouse(
    tmp_path: Path, store: LandingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same click again while a drain is copying the first moves the change to its new
    instant: the drain must not mark that newer version drained, or the warehouse keeps the
    first instant, older than an import that subscribed the person again in between."""
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    second = AS_OF + timedelta(minutes=5)
    _record(store, "cust_race", send_id="s1", now=AS_OF)
    add_subscription(con, "cust_race", "subscribed", AS_OF + timedelta(minutes=2))
    reading = store.undrained

    def read_then_click_again(*args, **kwargs):  # type: ignore[no-untyped-def]
        changes = reading(*args, **kwargs)
        _record(store, "cust_race", send_id="s1", now=second)
        return changes

    with monkeypatch.context() as patched:
        patched.setattr(store, "undrained", read_then_click_again)
        drain(con, store, now=second + timedelta(seconds=1))
    assert [c.changed_at for c in store.undrained()] == [second]
    drain(con, store)
    rows = con.execute("select changed_at from nudge.consent_changes").fetchall()
    assert [r[0] for r in rows] == [second]


def test_an_old_link_of_an_erased_person_does_not_bring_their_id_back(
    tmp_path: Path, store: LandingStore
) -> None:
    from dagster_project import audit
    from dagster_project.privacy import pseudonym

    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    ((salt,),) = con.execute("select salt from nudge.erasure_salt").fetchall()
    gone = pseudonym(salt, "cust_gone")
    audit.record(con, "erasure", actor="cli:test", subject=gone)
    _record(store, "cust_gone", send_id="s_old")
    _record(store, "cust_here", send_id="s_new")
    assert drain(con, store).changes == 2
    stored = con.execute("select customer_id from nudge.consent_changes order by 1").fetchall()
    assert stored == [("cust_here",), (gone,)]
    assert store.latest("cust_gone", "marketing") is None
    assert store.latest("cust_here", "marketing") is not None
    assert b"cust_gone" not in store.path.read_bytes()


def test_erasing_keeps_a_change_acknowledged_after_the_drain_until_the_next_drain(
    tmp_path: Path, store: LandingStore
) -> None:
    """`nudge erase` drains the store, then forgets the person there. An unsubscribe
    acknowledged in between is not in the warehouse yet: erasing it would lose a "no" the
    service answered for. It stays until the next drain, which stores it under the person's
    pseudonym and then forgets them here."""
    from dagster_project import audit
    from dagster_project.privacy import pseudonym

    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    _record(store, "cust_gone", send_id="s1", now=AS_OF)
    drain(con, store)
    _record(store, "cust_gone", send_id="s2", now=AS_OF + timedelta(minutes=1))
    assert store.erase("cust_gone") == 1  # the drained change only
    assert [c.send_id for c in store.undrained()] == ["s2"]

    ((salt,),) = con.execute("select salt from nudge.erasure_salt").fetchall()
    gone = pseudonym(salt, "cust_gone")
    audit.record(con, "erasure", actor="cli:test", subject=gone)
    assert drain(con, store).changes == 1
    stored = con.execute(
        "select customer_id, status from nudge.consent_changes where send_id = 's2'"
    ).fetchall()
    assert stored == [(gone, "unsubscribed")]
    assert store.latest("cust_gone", "marketing") is None
    assert b"cust_gone" not in store.path.read_bytes()
