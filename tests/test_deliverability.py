"""The deliverability guard: marketing stops when a provider's trailing 24 h complaint or hard
bounce rate passes its limit; transactional mail goes on; --approve releases it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from dagster_project import guards
from dagster_project.policy import DispatchPolicy, GuardPolicy
from dagster_project.providers import OutboxProvider
from tests.support.factories import AS_OF, CART_SPEC, cart_row, dispatch, write_eligibility

POLICY = GuardPolicy()


def _figures(sends: int, hard_bounces: int = 0, complaints: int = 0) -> guards.Deliverability:
    return guards.Deliverability("sendgrid", sends, hard_bounces, complaints)


def test_the_complaint_limit_is_gmails_and_strict() -> None:
    # 0.3 % is allowed; one complaint more is not.
    assert (
        guards.deliverability_hold("c", "marketing", _figures(1000, complaints=3), POLICY) is None
    )
    reason = guards.deliverability_hold("c", "marketing", _figures(1000, complaints=4), POLICY)
    assert reason is not None
    assert "0.40% (4 of 1000 sends)" in reason and "NUDGE_COMPLAINT_RATE_MAX" in reason


def test_the_hard_bounce_limit_holds_too() -> None:
    assert guards.deliverability_hold("c", "marketing", _figures(1000, 50), POLICY) is None
    reason = guards.deliverability_hold("c", "marketing", _figures(1000, 51), POLICY)
    assert reason is not None and "NUDGE_HARD_BOUNCE_RATE_MAX" in reason


def test_small_volumes_transactional_mail_and_approved_triggers_are_never_held() -> None:
    bad = _figures(499, hard_bounces=100, complaints=100)
    assert guards.deliverability_hold("c", "marketing", bad, POLICY) is None
    worse = _figures(5000, hard_bounces=1000, complaints=1000)
    assert guards.deliverability_hold("c", "transactional", worse, POLICY) is None
    approved = replace(POLICY, approved=frozenset({"c"}))
    assert guards.deliverability_hold("c", "marketing", worse, approved) is None
    assert guards.deliverability_hold("other", "marketing", worse, approved) is not None


NOW = datetime.now(UTC)  # the guard reads real time: reputation is today's


def _sent(con: duckdb.DuckDBPyConnection, n: int, provider: str, hours_ago: float) -> None:
    at = NOW - timedelta(hours=hours_ago)
    con.execute(
        "insert into nudge.send_ledger (send_id, trigger, trigger_key, step, customer_id,"
        " status, provider, planned_at, sending_at, settled_at, updated_at)"
        " select ? || i, 'welcome', 'k' || i, 'day_0', 'c' || i, 'sent', ?, ?, ?, ?, ?"
        " from range(?) t(i)",
        [f"{provider}-{hours_ago}-", provider, at, at, at, at, n],
    )


def _event(
    con: duckdb.DuckDBPyConnection,
    n: int,
    kind: str,
    provider: str,
    hours_ago: float,
    *,
    about: str | None = None,
    copy: int = 0,
) -> None:
    """``n`` events, one about each of the first ``n`` sends ``about`` names (a prefix of
    _sent's send_ids; None: mail nudge did not send)."""
    at = NOW - timedelta(hours=hours_ago)
    con.execute(
        "insert into nudge.email_events (event_id, provider, send_id, event_type, bounce_type,"
        " is_machine_open, occurred_at, received_at, drained_at)"
        " select ? || i, ?, case when ? is null then null else ? || i end, ?, ?, false, ?, ?, ?"
        " from range(?) t(i)",
        [
            f"{kind}-{provider}-{hours_ago}-{copy}-",
            provider,
            about,
            about,
            "bounced" if kind == "hard" else kind,
            "hard" if kind == "hard" else None,
            at,
            at,
            at,
            n,
        ],
    )


def test_the_window_is_the_last_24_hours_of_nudges_sends_through_this_provider(
    con: duckdb.DuckDBPyConnection,
) -> None:
    _sent(con, 1000, "sendgrid", 3)
    _sent(con, 9000, "sendgrid", 30)  # before the window
    _sent(con, 5000, "postmark", 3)  # another provider
    _event(con, 4, "complained", "sendgrid", 2, about="sendgrid-3-")
    # The same complaints again under other ids (Postmark's SpamComplaint and its
    # SubscriptionChange): each send counts once.
    _event(con, 4, "complained", "sendgrid", 2, about="sendgrid-3-", copy=1)
    _event(con, 7, "complained", "sendgrid", 25, about="sendgrid-30-")  # before the window
    _event(con, 9, "complained", "postmark", 2, about="postmark-3-")
    # The shop's other mail through the same account: not nudge's sends, not nudge's rate.
    _event(con, 50, "complained", "sendgrid", 2, about=None, copy=2)
    _event(con, 60, "hard", "sendgrid", 1, about="sendgrid-3-")
    figures = guards.deliverability(con, "sendgrid", NOW)
    assert (figures.sends, figures.complaints, figures.hard_bounces) == (1000, 4, 60)


def test_a_complaining_list_holds_marketing_until_approved(
    con: duckdb.DuckDBPyConnection, tmp_path
) -> None:
    _sent(con, 1000, "outbox", 3)
    _event(con, 5, "complained", "outbox", 2, about="outbox-3-")
    write_eligibility(con, [cart_row(f"k{i}") for i in range(3)])
    outbox = OutboxProvider(tmp_path / "outbox")
    held = dispatch(con, outbox, consent_cutoff=AS_OF)
    assert (held.outcome, held.held_by, held.held, held.sent) == ("held", "deliverability", 3, 0)
    assert "complaint rate" in (held.hold_reason or "")
    released = dispatch(
        con,
        outbox,
        run_id="run-2",
        consent_cutoff=AS_OF,
        policy=DispatchPolicy(guards=GuardPolicy(approved=frozenset({CART_SPEC.name}))),
    )
    assert released.sent == 3


@pytest.mark.parametrize("category", ["transactional"])
def test_transactional_mail_goes_on_while_marketing_is_held(
    con: duckdb.DuckDBPyConnection, tmp_path, category: str
) -> None:
    _sent(con, 1000, "outbox", 3)
    _event(con, 80, "hard", "outbox", 2, about="outbox-3-")
    spec = replace(CART_SPEC, sequence=replace(CART_SPEC.sequence, category=category))
    write_eligibility(con, [cart_row(f"k{i}", category=category) for i in range(2)])
    summary = dispatch(con, OutboxProvider(tmp_path / "outbox"), spec=spec, consent_cutoff=AS_OF)
    assert (summary.outcome, summary.sent) == ("ok", 2)
