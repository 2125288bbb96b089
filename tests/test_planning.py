"""Planning a tick's due steps on a real DuckDB file: frequency caps across triggers, priority,
deferred sends released later, holdouts, the mass-send hold, resume of deferred and waiting
sends, and paused triggers.

Earlier sends are made the way a tick makes them (plan, settle through
``dagster_project.ledger``), so the caps count exactly what the ledger functions record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.config import SQL_DIR
from dagster_project.ledger import PlanDecision
from dagster_project.policy import DispatchPolicy, FrequencyCaps
from dagster_project.providers import SendResult
from dagster_project.rendering import Renderer
from tests.support.factories import AS_OF, CART_SPEC, cart_row, dispatch, write_eligibility
from tests.support.ledger_steps import age_journal, hand_over, resume
from tests.support.mirrors import send_id as make_send_id
from tests.support.providers import RecordingProvider


@pytest.fixture
def con(engine_con):  # type: ignore[no-untyped-def]
    """These tests run on DuckDB and on PostgreSQL (the same statements)."""
    return engine_con


CART = CART_SPEC.relation
BIRTHDAY = "audience.birthday_eligibility"  # a higher-priority competitor
RECEIPT = "audience.receipt_eligibility"  # a transactional trigger
HISTORY = "audience.history_eligibility"  # earlier sends of some other trigger
LOOSE = FrequencyCaps(day=99, week=99)  # for setting up history without capping it


def row(trigger: str, key: str, customer: str, *, step: str = "s", **overrides: Any) -> dict:
    """A due, eligible row of any trigger for ``customer``."""
    return cart_row(
        key,
        **{
            "trigger": trigger,
            "send_id": make_send_id(trigger, key, step),
            "step": step,
            "template": f"{trigger}/{step}",
            "customer_id": customer,
            "reentry_key": customer,
            **overrides,
        },
    )


def cart(key: str, customer: str, **overrides: Any) -> dict:
    """A due, eligible abandoned-cart row for ``customer``."""
    return cart_row(key, customer_id=customer, reentry_key=customer, **overrides)


def decide(
    con: duckdb.DuckDBPyConnection,
    *,
    relation: str = CART,
    as_of: datetime = AS_OF,
    run_id: str = "r1",
    **options: Any,
) -> PlanDecision:
    with ledger.planning(
        con, eligibility=relation, run_id=run_id, as_of=as_of, provider="outbox", **options
    ) as decision:
        pass
    return decision


def status(con: duckdb.DuckDBPyConnection, send_id: str) -> tuple[str, str | None]:
    found = con.execute(
        "select status, reason from nudge.send_ledger where send_id = ?", [send_id]
    ).fetchone()
    assert found is not None, f"{send_id} is not in the ledger"
    return found[0], found[1]


def events(con: duckdb.DuckDBPyConnection, send_id: str) -> list[tuple[Any, ...]]:
    return con.execute(
        "select status, reason, run_id from nudge.send_events where send_id = ? "
        "order by recorded_at, status",
        [send_id],
    ).fetchall()


def count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    found = con.execute(f"select count(*) from {table}").fetchone()
    assert found is not None
    return int(found[0])


_RESULTS = {
    "sent": lambda i: SendResult(i, "sent", provider_message_id=f"m-{i}"),
    "unknown": lambda i: SendResult(i, "unknown", error="read timeout"),
    "failed_retryable": lambda i: SendResult(i, "failed", error="HTTP 503", retryable=True),
    "failed_permanent": lambda i: SendResult(i, "failed", error="HTTP 400"),
}


def send_earlier(
    con: duckdb.DuckDBPyConnection,
    customer: str,
    *,
    hours: float,
    category: str = "marketing",
    final: str = "sent",
    trigger: str = "history",
) -> str:
    """Another trigger's send to ``customer`` by the tick ``hours`` before AS_OF, taken to
    ``final`` (planned, sent, unknown, failed_*) through the ledger functions; ``sending`` is
    the state an older release left a batch in while its requests were out."""
    tick = AS_OF - timedelta(hours=hours)
    key = f"{customer}-{hours}h"
    earlier = row(trigger, key, customer, as_of=tick, category=category)
    write_eligibility(con, [earlier], HISTORY)
    run_id = f"history-{key}"
    assert decide(con, relation=HISTORY, as_of=tick, run_id=run_id, caps=LOOSE).planned == 1
    send_id = earlier["send_id"]
    if final == "sending":
        con.execute(
            "update nudge.send_ledger set status = 'sending', sent_as_of = ? where send_id = ?",
            [tick, send_id],
        )
    if final in _RESULTS:
        ledger.settle(con, run_id=run_id, results=[_RESULTS[final](send_id)], as_of=tick)
    assert status(con, send_id)[0] == final
    return send_id


# --- the daily and weekly caps ---------------------------------------------------------------


def test_a_settled_send_records_the_tick_the_caps_count_by(con) -> None:
    send_id = send_earlier(con, "c1", hours=3)
    (sent_as_of,) = con.execute(
        "select sent_as_of from nudge.send_ledger where send_id = ?", [send_id]
    ).fetchone()
    assert sent_as_of == AS_OF - timedelta(hours=3)


@pytest.mark.parametrize(
    ("hours_ago", "expected"),
    [
        (3, ("deferred", "frequency_cap_24h")),
        (23.5, ("deferred", "frequency_cap_24h")),
        # Exactly one day later is a new day: a daily trigger at 09:00 is not pushed to 10:00.
        (24, ("planned", None)),
        (25, ("planned", None)),
    ],
)
def test_one_marketing_email_per_customer_per_24h(con, hours_ago, expected) -> None:
    send_earlier(con, "c1", hours=hours_ago)
    capped, other = cart("k1", "c1"), cart("k2", "c2")
    write_eligibility(con, [capped, other])
    decision = decide(con)
    assert status(con, capped["send_id"]) == expected
    assert status(con, other["send_id"]) == ("planned", None)  # another customer: unaffected
    if expected[0] == "deferred":
        assert (decision.planned, decision.deferred) == (1, 1)
        assert decision.by_status == {"planned": 1, "deferred": 1}
    else:
        assert (decision.planned, decision.deferred) == (2, 0)
        assert decision.by_status == {"planned": 2}


def test_a_retried_send_counts_from_the_tick_it_went_out(con) -> None:
    # First planned 26 h ago, failed on a 503, resumed and delivered by the tick 3 h ago: it
    # counts as an email of 3 h ago, not of when it was first planned.
    first, retry = AS_OF - timedelta(hours=26), AS_OF - timedelta(hours=3)
    earlier = row("history", "retried", "c1", as_of=first, expires_at=AS_OF)
    write_eligibility(con, [earlier], HISTORY)
    send_id = earlier["send_id"]
    decide(con, relation=HISTORY, as_of=first, run_id="h1")
    ledger.settle(con, run_id="h1", results=[_RESULTS["failed_retryable"](send_id)], as_of=first)
    write_eligibility(con, [{**earlier, "as_of": retry}], HISTORY)
    assert resume(
        con,
        trigger="history",
        eligibility=HISTORY,
        run_id="h2",
        as_of=retry,
        provider="outbox",
        idempotent=False,
    ) == {"planned": 1}
    ledger.settle(con, run_id="h2", results=[_RESULTS["sent"](send_id)], as_of=retry)
    assert status(con, send_id) == ("sent", None)

    new = cart("k1", "c1")
    write_eligibility(con, [new])
    decide(con)
    assert status(con, new["send_id"]) == ("deferred", "frequency_cap_24h")


@pytest.mark.parametrize(
    ("final", "counts"),
    [
        ("planned", True),  # about to go out
        ("sending", True),  # may be out (a batch an older release left in flight)
        ("sent", True),
        ("unknown", True),  # may have been delivered
        ("failed_retryable", True),  # waits for its retry, which takes no new slot: holds it
        ("failed_permanent", False),
    ],
)
def test_what_counts_toward_the_cap(con, final, counts) -> None:
    send_earlier(con, "c1", hours=3, final=final)
    new = cart("k1", "c1")
    write_eligibility(con, [new])
    decide(con)
    assert status(con, new["send_id"]) == (
        ("deferred", "frequency_cap_24h") if counts else ("planned", None)
    )


def test_transactional_sends_neither_obey_nor_count_toward_the_caps(con) -> None:
    send_earlier(con, "c1", hours=3)  # marketing: c1's daily slot is used
    send_earlier(con, "c2", hours=3, category="transactional")  # does not use c2's slot
    receipt = row("receipt", "o1", "c1", category="transactional")
    write_eligibility(con, [receipt], RECEIPT)
    receipt_decision = decide(con, relation=RECEIPT, run_id="receipt-run")
    assert status(con, receipt["send_id"]) == ("planned", None)
    assert (receipt_decision.planned, receipt_decision.deferred) == (1, 0)

    marketing_c1, marketing_c2 = cart("k1", "c1"), cart("k2", "c2")
    write_eligibility(con, [marketing_c1, marketing_c2])
    decide(con)
    # c1 is capped by the marketing send (not by the receipt planned this tick), c2 is not.
    assert status(con, marketing_c1["send_id"]) == ("deferred", "frequency_cap_24h")
    assert status(con, marketing_c2["send_id"]) == ("planned", None)


@pytest.mark.parametrize(
    ("hours_ago", "expected"),
    [
        ((30, 72, 144), ("deferred", "frequency_cap_7d")),  # three within 7 days
        ((30, 72, 192), ("planned", None)),  # the third is 8 days old
        ((30, 72), ("planned", None)),
    ],
)
def test_three_marketing_emails_per_customer_per_7_days(con, hours_ago, expected) -> None:
    for hours in sorted(hours_ago, reverse=True):  # oldest first, as ticks would
        send_earlier(con, "c1", hours=hours)
    new = cart("k1", "c1")
    write_eligibility(con, [new])
    decide(con)
    assert status(con, new["send_id"]) == expected


def test_caps_are_configurable(con) -> None:
    send_earlier(con, "c1", hours=3)
    new = cart("k1", "c1")
    write_eligibility(con, [new])
    decide(con, caps=FrequencyCaps(day=2, week=3))
    assert status(con, new["send_id"]) == ("planned", None)


def test_cap_policy_skip_settles_the_step_as_skipped(con) -> None:
    send_earlier(con, "c1", hours=3)
    new = cart("k1", "c1")
    write_eligibility(con, [new])
    decision = decide(con, cap_policy="skip")
    assert status(con, new["send_id"]) == ("skipped", "frequency_cap_24h")
    assert (decision.planned, decision.deferred, decision.by_status) == (0, 0, {"skipped": 1})
    (settled_at,) = con.execute(
        "select settled_at from nudge.send_ledger where send_id = ?", [new["send_id"]]
    ).fetchone()
    assert settled_at is not None
    # Skipped is final: a tick after the cap window does not send it after all.
    later = AS_OF + timedelta(hours=22)
    write_eligibility(con, [cart("k1", "c1", as_of=later, expires_at=AS_OF + timedelta(days=2))])
    assert decide(con, as_of=later, run_id="r2", cap_policy="skip").planned == 0
    assert status(con, new["send_id"]) == ("skipped", "frequency_cap_24h")


def test_two_sends_due_for_one_customer_in_one_tick_go_earliest_first(con) -> None:
    a, b = cart("cart_a", "c1"), cart("cart_b", "c1")
    # Give the earlier due_at to the larger send_id, so ordering by send_id would fail.
    first, second = sorted([a, b], key=lambda r: r["send_id"], reverse=True)
    first["due_at"] = AS_OF - timedelta(hours=2)
    second["due_at"] = AS_OF - timedelta(hours=1)
    write_eligibility(con, [second, first])
    decision = decide(con)
    assert status(con, first["send_id"]) == ("planned", None)
    assert status(con, second["send_id"]) == ("deferred", "frequency_cap_24h")
    assert (decision.planned, decision.deferred) == (1, 1)


# --- priority between triggers ---------------------------------------------------------------


def test_a_higher_priority_trigger_due_now_takes_the_slot(con) -> None:
    write_eligibility(
        con,
        [
            row("birthday", "b1", "c1"),  # due now: wins c1's slot
            row(
                "birthday",
                "b2",
                "c2",
                is_eligible=False,
                exclusion_reason="unsubscribed",
                rule_exclusion_reason="unsubscribed",
            ),  # will not go out: takes no slot
            row("birthday", "b3", "c3", due_at=AS_OF + timedelta(hours=1)),  # not due yet
            row("birthday", "b4", "c4", expires_at=AS_OF - timedelta(minutes=1)),  # expired
        ],
        BIRTHDAY,
    )
    carts = [cart(f"k{i}", f"c{i}") for i in range(1, 6)]
    write_eligibility(con, carts)

    # Without the competitor every cart would go out (held: nothing is written).
    with ledger.planning(
        con, eligibility=CART, run_id="probe", as_of=AS_OF, provider="outbox"
    ) as probe:
        assert probe.planned == 5
        probe.hold()
    assert count(con, "nudge.send_ledger") == 0

    decision = decide(con, competitors=[BIRTHDAY])
    assert status(con, carts[0]["send_id"]) == ("deferred", "frequency_cap_24h")
    for other in carts[1:]:
        assert status(con, other["send_id"]) == ("planned", None)
    assert (decision.planned, decision.deferred) == (4, 1)
    # The competitor's own rows are not this trigger's to write.
    assert count(con, "nudge.send_ledger where trigger = 'birthday'") == 0


@pytest.mark.parametrize("final", ["planned", "handed_over", "sent"])
def test_a_competitor_send_already_in_the_ledger_is_counted_once(con, final) -> None:
    caps = FrequencyCaps(day=2, week=3)
    # c1: only the birthday send, planned earlier in this same tick by its own step.
    # c2: a marketing send 3 h ago plus the birthday send still due: two, the cap is full.
    birthday_c1, birthday_c2 = row("birthday", "b1", "c1"), row("birthday", "b2", "c2")
    write_eligibility(con, [birthday_c1], BIRTHDAY)
    assert decide(con, relation=BIRTHDAY, run_id="bday", caps=caps).planned == 1
    if final == "handed_over":  # its request is on the wire: the ledger still says planned
        hand_over(con, run_id="bday", trigger="birthday", send_ids=[birthday_c1["send_id"]])
    if final == "sent":
        ledger.settle(
            con, run_id="bday", results=[SendResult(birthday_c1["send_id"], "sent")], as_of=AS_OF
        )
    assert status(con, birthday_c1["send_id"])[0] == final.replace("handed_over", "planned")
    send_earlier(con, "c2", hours=3)
    # The birthday table was built before any send step ran: both rows still look due there.
    write_eligibility(con, [birthday_c1, birthday_c2], BIRTHDAY)

    cart_c1, cart_c2 = cart("k1", "c1"), cart("k2", "c2")
    write_eligibility(con, [cart_c1, cart_c2])
    decide(con, caps=caps, competitors=[BIRTHDAY])
    assert status(con, cart_c1["send_id"]) == ("planned", None)
    assert status(con, cart_c2["send_id"]) == ("deferred", "frequency_cap_24h")


# --- deferred sends --------------------------------------------------------------------------


def test_a_deferred_send_is_released_once_the_cap_window_has_passed(con) -> None:
    send_earlier(con, "c1", hours=3)  # c1's slot is free again at AS_OF + 21 h
    expires = AS_OF + timedelta(days=2)
    capped = cart("k1", "c1", expires_at=expires)
    write_eligibility(con, [capped])
    assert decide(con).deferred == 1
    send_id = capped["send_id"]
    assert events(con, send_id) == [("deferred", "frequency_cap_24h", "r1")]

    # Still inside the window: nothing changes and no "still deferred" event is recorded.
    still = AS_OF + timedelta(hours=20)
    write_eligibility(
        con, [cart("k1", "c1", as_of=still, expires_at=expires, ledger_status="deferred")]
    )
    waiting = decide(con, as_of=still, run_id="r2")
    assert (waiting.planned, waiting.deferred, waiting.by_status) == (0, 1, {})
    assert status(con, send_id) == ("deferred", "frequency_cap_24h")
    assert events(con, send_id) == [("deferred", "frequency_cap_24h", "r1")]

    # The window has passed: the next tick plans it, rendered from the current row.
    later = AS_OF + timedelta(hours=22)
    write_eligibility(
        con,
        [
            cart(
                "k1",
                "c1",
                as_of=later,
                expires_at=expires,
                ledger_status="deferred",
                first_name="Annie",
            )
        ],
    )
    released = decide(con, as_of=later, run_id="r3")
    assert (released.planned, released.deferred, released.by_status) == (1, 0, {"planned": 1})
    assert status(con, send_id) == ("planned", None)
    assert events(con, send_id) == [
        ("deferred", "frequency_cap_24h", "r1"),
        ("planned", None, "r3"),
    ]
    run_id, as_of, name = con.execute(
        "select run_id, as_of, context ->> 'first_name' from nudge.send_ledger where send_id = ?",
        [send_id],
    ).fetchone()
    assert (run_id, as_of, name) == ("r3", later, "Annie")
    # It goes out with this run's batches.
    batches = ledger.planned_batches(con, trigger="abandoned_cart", run_id="r3", batch_size=10)
    assert [[r[0] for r in b] for b in batches] == [[send_id]]


def test_a_deferred_send_released_under_cap_policy_skip_is_skipped(con) -> None:
    send_earlier(con, "c1", hours=3)
    capped = cart("k1", "c1", expires_at=AS_OF + timedelta(days=2))
    write_eligibility(con, [capped])
    decide(con)
    assert status(con, capped["send_id"]) == ("deferred", "frequency_cap_24h")
    # Two hours later c1's slot is still used, and the trigger's YAML now says cap_policy: skip.
    later = AS_OF + timedelta(hours=2)
    write_eligibility(
        con,
        [
            cart(
                "k1",
                "c1",
                as_of=later,
                expires_at=AS_OF + timedelta(days=2),
                ledger_status="deferred",
            )
        ],
    )
    decision = decide(con, as_of=later, run_id="r2", cap_policy="skip")
    assert decision.by_status == {"skipped": 1}
    assert status(con, capped["send_id"]) == ("skipped", "frequency_cap_24h")


# --- holdouts and conditions -----------------------------------------------------------------


def _not_sent(key: str, customer: str, reason: str) -> dict:
    return cart(
        key, customer, is_eligible=False, exclusion_reason=reason, rule_exclusion_reason=reason
    )


def test_holdouts_and_unmet_conditions_are_recorded_once_and_never_sent(con) -> None:
    rows = {
        "holdout": _not_sent("h", "c1", "holdout"),
        "control_group": _not_sent("g", "c2", "control_group"),
        "condition_not_met": _not_sent("n", "c3", "condition_not_met"),
        "unsubscribed": _not_sent("u", "c4", "unsubscribed"),  # an ordinary exclusion
    }
    write_eligibility(con, list(rows.values()))
    decision = decide(con)
    assert (decision.planned, decision.deferred) == (0, 0)
    assert decision.by_status == {"holdout": 2, "skipped": 1}
    assert status(con, rows["holdout"]["send_id"]) == ("holdout", "holdout")
    assert status(con, rows["control_group"]["send_id"]) == ("holdout", "control_group")
    assert status(con, rows["condition_not_met"]["send_id"]) == ("skipped", "condition_not_met")
    assert count(con, f"nudge.send_ledger where send_id = '{rows['unsubscribed']['send_id']}'") == 0
    unsettled = count(con, "nudge.send_ledger where settled_at is null")
    assert unsettled == 0  # settled outcomes, nothing waiting

    # The same table planned again, and the next tick's table (which now sees the ledger):
    # no second row, no second event, nothing planned.
    assert decide(con, run_id="r2").by_status == {}
    write_eligibility(
        con,
        [
            {**r, "ledger_status": s, "exclusion_reason": s}
            for r, s in (
                (rows["holdout"], "holdout"),
                (rows["control_group"], "holdout"),
                (rows["condition_not_met"], "skipped"),
            )
        ],
    )
    assert decide(con, as_of=AS_OF + timedelta(hours=1), run_id="r3").by_status == {}
    for r in rows.values():
        expected = 0 if r is rows["unsubscribed"] else 1
        assert len(events(con, r["send_id"])) == expected
    assert count(con, "nudge.send_ledger where status = 'planned'") == 0


def test_holdouts_and_skipped_steps_do_not_use_the_cap(con) -> None:
    # c1 was held out of another trigger an hour ago: that is not an email.
    earlier = row("history", "old", "c1", as_of=AS_OF - timedelta(hours=1))
    earlier.update(is_eligible=False, exclusion_reason="holdout", rule_exclusion_reason="holdout")
    write_eligibility(con, [earlier], HISTORY)
    decide(con, relation=HISTORY, as_of=AS_OF - timedelta(hours=1), run_id="h")
    assert status(con, earlier["send_id"]) == ("holdout", "holdout")
    # c2: a step of this trigger skipped by its condition, due before the one that goes out.
    skipped = _not_sent("skipped", "c2", "condition_not_met")
    skipped["due_at"] = AS_OF - timedelta(hours=3)
    held_out = _not_sent("held", "c3", "holdout")
    held_out["due_at"] = AS_OF - timedelta(hours=3)
    fresh = [cart("k1", "c1"), cart("k2", "c2"), cart("k3", "c3")]
    write_eligibility(con, [skipped, held_out, *fresh])
    decision = decide(con)
    for r in fresh:
        assert status(con, r["send_id"]) == ("planned", None)
    assert decision.by_status == {"planned": 3, "holdout": 1, "skipped": 1}


# --- a sequence only moves forward ----------------------------------------------------------


def _step(key: str, customer: str, step: str, index: int, **overrides: Any) -> dict:
    return cart(
        key,
        customer,
        send_id=make_send_id("abandoned_cart", key, step),
        step=step,
        step_index=index,
        template=f"abandoned_cart/{step}",
        **overrides,
    )


def test_a_step_before_one_already_sent_is_superseded_not_planned(con) -> None:
    # Step 2 went out yesterday; the cart was edited since, so entered_at moved and step 1 is
    # due again. The table was built before the ledger knew (or by a rule-less copy of it):
    # planning reads the ledger itself and records step 1 as superseded.
    second = _step("k", "c1", "second_reminder", 2, as_of=AS_OF - timedelta(hours=24))
    write_eligibility(con, [second], HISTORY)
    assert decide(con, relation=HISTORY, as_of=AS_OF - timedelta(hours=24), run_id="y").planned == 1
    ledger.settle(
        con,
        run_id="y",
        results=[SendResult(second["send_id"], "sent", provider_message_id="m")],
        as_of=AS_OF,
    )
    first = _step("k", "c1", "reminder", 1)
    other = cart("other", "c2")
    write_eligibility(con, [first, other])
    decision = decide(con)
    assert decision.by_status == {"planned": 1, "skipped": 1}
    assert status(con, first["send_id"]) == ("skipped", "superseded")
    assert status(con, other["send_id"]) == ("planned", None)


def test_steps_the_engine_marks_superseded_are_recorded_once_due_or_not(con) -> None:
    due_now = _step("k", "c1", "reminder", 1, is_eligible=False)
    later = _step(
        "k",
        "c1",
        "second_reminder",
        2,
        is_eligible=False,
        due_at=AS_OF + timedelta(hours=20),
        expires_at=AS_OF + timedelta(hours=44),
    )
    gone = _step(
        "old", "c2", "reminder", 1, is_eligible=False, expires_at=AS_OF - timedelta(hours=1)
    )
    for r in (due_now, later, gone):
        r.update(exclusion_reason="superseded", rule_exclusion_reason="superseded")
    write_eligibility(con, [due_now, later, gone])
    assert decide(con).by_status == {"skipped": 2}
    assert status(con, due_now["send_id"]) == ("skipped", "superseded")
    assert status(con, later["send_id"]) == ("skipped", "superseded")
    # A step whose window closed before it was overtaken keeps no row, like any expired step.
    assert count(con, f"nudge.send_ledger where send_id = '{gone['send_id']}'") == 0
    assert decide(con, run_id="r2").by_status == {}


# --- the mass-send hold ----------------------------------------------------------------------


def test_hold_rolls_back_every_decision(con) -> None:
    send_earlier(con, "c1", hours=3)
    before_rows, before_events = count(con, "nudge.send_ledger"), count(con, "nudge.send_events")
    write_eligibility(
        con,
        [cart("k1", "c1"), cart("k2", "c2"), _not_sent("h", "c3", "holdout")],
    )
    with ledger.planning(con, eligibility=CART, run_id="r1", as_of=AS_OF, provider="x") as held:
        assert (held.planned, held.deferred) == (1, 1)
        assert held.by_status == {"planned": 1, "deferred": 1, "holdout": 1}
        held.hold()
    assert held.held
    assert count(con, "nudge.send_ledger") == before_rows
    assert count(con, "nudge.send_events") == before_events
    assert count(con, "nudge.send_ledger where run_id = 'r1'") == 0
    # The next tick decides afresh, exactly as if the held one never happened.
    again = decide(con, run_id="r2")
    assert again.by_status == {"planned": 1, "deferred": 1, "holdout": 1}
    assert count(con, "nudge.send_events where run_id = 'r2'") == 3


# --- resume ----------------------------------------------------------------------------------


def _failed_retryable(con, key: str = "blip") -> str:
    write_eligibility(con, [cart(key, f"c_{key}")])
    decide(con, run_id="r1")
    send_id = make_send_id("abandoned_cart", key, "reminder")
    ledger.settle(
        con,
        run_id="r1",
        results=[SendResult(send_id, "failed", error="HTTP 503", retryable=True)],
        as_of=AS_OF,
    )
    assert status(con, send_id) == ("failed_retryable", "provider_unavailable")
    return send_id


def _resume(con, as_of: datetime) -> dict[str, int]:
    return resume(
        con,
        trigger="abandoned_cart",
        eligibility=CART,
        run_id="next",
        as_of=as_of,
        provider="outbox",
        idempotent=False,
    )


@pytest.mark.parametrize(
    ("rule_reason", "expected", "counts"),
    [
        (None, "planned", {"planned": 1}),
        ("quiet_hours", "failed_retryable", {}),  # waits for the morning, keeps its state
        ("not_due", "failed_retryable", {}),
        # Its customer's best hour moved later (a new open): it waits for it, never dropped.
        ("best_hour", "failed_retryable", {}),
        ("unsubscribed", "skipped", {"skipped": 1}),
    ],
)
def test_resume_leaves_a_retry_waiting_for_quiet_hours_alone(
    con, rule_reason, expected, counts
) -> None:
    send_id = _failed_retryable(con)
    later = AS_OF + timedelta(hours=1)
    history = events(con, send_id)
    write_eligibility(
        con,
        [
            cart(
                "blip",
                "c_blip",
                as_of=later,
                is_eligible=False,
                exclusion_reason="retrying",
                rule_exclusion_reason=rule_reason,
                ledger_status="failed_retryable",
            )
        ],
    )
    assert _resume(con, later) == counts
    assert status(con, send_id)[0] == expected
    if not counts:
        assert events(con, send_id) == history  # untouched: no event either
        (run_id,) = con.execute(
            "select run_id from nudge.send_ledger where send_id = ?", [send_id]
        ).fetchone()
        assert run_id == "r1"


def test_a_run_for_an_earlier_instant_leaves_a_later_ticks_unfinished_sends_alone(con) -> None:
    """Found in review: the hourly tick and the 5-minute transactional job interleave. A run
    for an earlier instant (late behind the lock, or re-executed) took over a send a later
    run had claimed and died with, judged it by its own table, where the entry did not exist
    yet, and skipped it (not_a_candidate): never sent. It waits for a run as late as its own."""
    write_eligibility(con, [cart("late", "c_late")])
    decide(con, run_id="dead")  # claimed for AS_OF by a run that died before its push
    send_id = make_send_id("abandoned_cart", "late", "reminder")
    assert status(con, send_id) == ("planned", None)
    earlier = AS_OF - timedelta(minutes=5)
    write_eligibility(con, [cart("other", "c_other", as_of=earlier)])  # no "late" entry yet
    assert _resume(con, earlier) == {}
    assert status(con, send_id) == ("planned", None)
    write_eligibility(con, [cart("late", "c_late")])
    assert _resume(con, AS_OF) == {"planned": 1}


def _deferred(con, *, expires_at: datetime) -> str:
    send_earlier(con, "c1", hours=3)
    capped = cart("k1", "c1", expires_at=expires_at)
    write_eligibility(con, [capped])
    decide(con)
    assert status(con, capped["send_id"]) == ("deferred", "frequency_cap_24h")
    return capped["send_id"]


def _deferred_row_now(as_of: datetime, expires_at: datetime, rule_reason: str | None) -> dict:
    return cart(
        "k1",
        "c1",
        as_of=as_of,
        expires_at=expires_at,
        is_eligible=rule_reason is None,
        exclusion_reason=rule_reason,
        rule_exclusion_reason=rule_reason,
        ledger_status="deferred",
    )


def test_resume_expires_a_deferred_send_past_its_grace_window(con) -> None:
    expires = AS_OF + timedelta(hours=1)
    send_id = _deferred(con, expires_at=expires)
    later = AS_OF + timedelta(hours=2)
    write_eligibility(con, [_deferred_row_now(later, expires, "expired")])
    assert _resume(con, later) == {"expired": 1}
    assert status(con, send_id) == ("expired", "grace_window_ended")


def test_resume_skips_a_deferred_send_no_longer_allowed(con) -> None:
    expires = AS_OF + timedelta(days=2)
    send_id = _deferred(con, expires_at=expires)
    later = AS_OF + timedelta(hours=2)
    write_eligibility(con, [_deferred_row_now(later, expires, "unsubscribed")])
    assert _resume(con, later) == {"skipped": 1}
    assert status(con, send_id) == ("skipped", "no_longer_eligible:unsubscribed")


@pytest.mark.parametrize("rule_reason", [None, "quiet_hours", "best_hour"])
def test_resume_never_plans_a_deferred_send(con, rule_reason) -> None:
    # Only planning releases a deferred send, when the cap allows: resume leaves it waiting.
    expires = AS_OF + timedelta(days=2)
    send_id = _deferred(con, expires_at=expires)
    later = AS_OF + timedelta(hours=22)  # the cap would allow it now
    write_eligibility(con, [_deferred_row_now(later, expires, rule_reason)])
    assert _resume(con, later) == {}
    assert status(con, send_id) == ("deferred", "frequency_cap_24h")
    assert len(events(con, send_id)) == 1


# --- idle steps ------------------------------------------------------------------------------


def _sent_earlier(con) -> None:
    write_eligibility(con, [cart("k", "c1")])
    decide(con)
    send_id = make_send_id("abandoned_cart", "k", "reminder")
    ledger.settle(
        con,
        run_id="r1",
        results=[SendResult(send_id, "sent", provider_message_id="m")],
        as_of=AS_OF,
    )
    again = cart("k", "c1", is_eligible=False, exclusion_reason="already_sent")
    write_eligibility(con, [{**again, "ledger_status": "sent"}])


def _other_trigger_unfinished(con) -> None:
    write_eligibility(con, [row("history", "k", "c9")], HISTORY)
    decide(con, relation=HISTORY)  # planned, never pushed: unfinished, but not this trigger's
    write_eligibility(con, [cart("k", "c1", due_at=AS_OF + timedelta(hours=2))])


def _superseded_not_due(con) -> None:
    later = _step("k", "c1", "second_reminder", 2, is_eligible=False)
    later.update(
        due_at=AS_OF + timedelta(hours=20),
        exclusion_reason="superseded",
        rule_exclusion_reason="superseded",
    )
    write_eligibility(con, [later])


def _waiting_retry(con) -> None:
    _failed_retryable(con)
    write_eligibility(
        con,
        [cart("blip", "c_blip", is_eligible=False, exclusion_reason="retrying")],
    )


def _unknown(con) -> None:
    write_eligibility(con, [cart("k", "c1")])
    decide(con, run_id="dead")
    send_id = make_send_id("abandoned_cart", "k", "reminder")
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=[send_id])
    assert _resume(con, AS_OF) == {"unknown": 1}  # in doubt: never resent by itself
    again = cart("k", "c1", is_eligible=False, exclusion_reason="delivery_unknown")
    write_eligibility(con, [{**again, "ledger_status": "unknown"}])


def _holdout_recorded(con) -> None:
    held = _not_sent("k", "c1", "holdout")
    write_eligibility(con, [held])
    decide(con)
    write_eligibility(con, [{**held, "ledger_status": "holdout"}])


def _retry_due(con) -> datetime:
    _failed_retryable(con)
    later = AS_OF + timedelta(hours=1)
    retrying = cart("blip", "c_blip", as_of=later, is_eligible=False, exclusion_reason="retrying")
    write_eligibility(con, [{**retrying, "ledger_status": "failed_retryable"}])
    return later


def _deferred_entry_gone(con) -> datetime:
    _deferred(con, expires_at=AS_OF + timedelta(days=2))
    later = AS_OF + timedelta(hours=2)
    write_eligibility(con, [cart("other", "c2", as_of=later, due_at=later + timedelta(hours=1))])
    return later


def _claimed_by_a_dead_run(con) -> None:
    write_eligibility(con, [cart("k", "c1")])
    decide(con, run_id="dead")


def _deferred_still_capped(con) -> None:
    _deferred(con, expires_at=AS_OF + timedelta(days=2))


def _claimed_by_a_later_run(con) -> datetime:
    write_eligibility(con, [cart("k", "c1")])
    decide(con, run_id="dead")
    earlier = AS_OF - timedelta(minutes=5)
    write_eligibility(con, [cart("other", "c2", as_of=earlier, due_at=AS_OF)])
    return earlier


def _table(*rows: dict) -> Callable[[Any], None]:
    return lambda con: write_eligibility(con, list(rows))


IDLE_STATES: dict[str, tuple[Callable[[Any], datetime | None], bool, bool]] = {
    # name: (set-up returning the tick if not AS_OF, idle?, do resume and planning change rows?)
    "a due eligible step": (_table(cart("k", "c1")), False, True),
    "a step due at the tick itself": (_table(cart("k", "c1", due_at=AS_OF)), False, True),
    "a step whose grace ends at the tick": (
        _table(cart("k", "c1", due_at=AS_OF - timedelta(days=1), expires_at=AS_OF)),
        False,
        True,
    ),
    "a step not due yet": (_table(cart("k", "c1", due_at=AS_OF + timedelta(hours=1))), True, False),
    "a step past its grace": (
        _table(
            cart("k", "c1", due_at=AS_OF - timedelta(days=2), expires_at=AS_OF - timedelta(hours=1))
        ),
        True,
        False,
    ),
    "a due step excluded by a rule": (_table(_not_sent("k", "c1", "unsubscribed")), True, False),
    "a due step already sent": (_sent_earlier, True, False),
    "a due holdout not recorded yet": (_table(_not_sent("k", "c1", "holdout")), False, True),
    "a holdout already recorded": (_holdout_recorded, True, False),
    "a due unmet condition not recorded yet": (
        _table(_not_sent("k", "c1", "condition_not_met")),
        False,
        True,
    ),
    "a superseded step not due yet": (_superseded_not_due, False, True),
    "a send another trigger left unfinished": (_other_trigger_unfinished, True, False),
    "a claimed send of a run that died": (_claimed_by_a_dead_run, False, True),
    # Left to a run at least as late as the one that claimed it: not idle, but untouched.
    "a send claimed by a later run": (_claimed_by_a_later_run, False, False),
    # Still capped: it waits, and records no event.
    "a deferred send": (_deferred_still_capped, False, False),
    "a deferred send whose entry is gone": (_deferred_entry_gone, False, True),
    "a retry not due yet": (_waiting_retry, False, False),
    "a retry due": (_retry_due, False, True),
    "an unknown send": (_unknown, True, False),
}


@pytest.mark.parametrize(("setup", "idle", "changes"), IDLE_STATES.values(), ids=IDLE_STATES.keys())
def test_a_step_said_to_be_idle_would_have_changed_nothing(con, setup, idle, changes) -> None:
    """The send step skips resume and planning when ``ledger.is_idle`` says neither could
    change a row: a check that said so wrongly would lose a send. So in each state, the check
    is compared with what resume and planning then do at the same tick."""
    tick = setup(con) or AS_OF
    assert ledger.is_idle(con, trigger="abandoned_cart", eligibility=CART, as_of=tick) is idle

    def state() -> tuple[Any, ...]:
        rows = con.execute("select * from nudge.send_ledger order by send_id").fetchall()
        return (rows, count(con, "nudge.send_events"))

    before = state()
    _resume(con, tick)
    decide(con, run_id="next", as_of=tick)
    assert (state() != before) is changes
    assert not (idle and changes)


def test_the_idle_check_keeps_plannings_candidate_filter() -> None:
    """idle.sql copies plan_decide.sql's candidate filter (less the ledger anti-join): a
    change to one without the other would make the idle check skip steps planning would
    take, so the two texts must stay the same."""

    def flat(name: str) -> str:
        text = (SQL_DIR / "ledger" / f"{name}.sql").read_text()
        return " ".join(re.sub(r"--[^\n]*", "", text).split())

    start = "$as_of <= eligibility.expires_at"
    planning = flat("plan_decide")
    planning = planning[planning.index(start) : planning.index(" ), step_positions as")]
    idle = flat("idle")
    idle = idle[idle.index(start) : idle.index(" ) as idle")]
    assert planning == idle
    assert "'superseded'" in idle


# --- dispatch: paused triggers, summary counts -----------------------------------------------


@pytest.fixture
def renderer(tmp_path: Path) -> Renderer:
    """Templates of their own, so these tests do not depend on the shipped copy."""
    for step in ("reminder", "second_reminder"):
        folder = tmp_path / "templates" / "abandoned_cart"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{step}.subject.j2").write_text("Your cart, {{ first_name }}")
        (folder / f"{step}.html.j2").write_text("<p>{{ cart_url }}</p>")
        (folder / f"{step}.txt.j2").write_text("{{ cart_url }}")
    return Renderer(templates_dir=tmp_path / "templates")


def _dispatch(con, renderer, provider, *, run_id="r1", as_of=AS_OF, **options):
    competitors = options.pop("competitors", ())
    return dispatch(
        con,
        provider,
        renderer=renderer,
        as_of=as_of,
        run_id=run_id,
        policy=DispatchPolicy(**options),
        competitors=competitors,
    )


def test_a_paused_trigger_touches_nothing(con, renderer) -> None:
    write_eligibility(con, [cart("k1", "c1"), cart("k2", "c2")])
    provider = RecordingProvider(max_batch=100)
    summary = _dispatch(con, renderer, provider, paused=frozenset({"abandoned_cart"}))
    assert summary.outcome == "paused"
    assert "paused" in (summary.skipped_reason or "")
    assert (summary.new, summary.sent) == (0, 0)
    assert provider.sent == []
    assert count(con, "nudge.send_ledger") == 0
    assert count(con, "nudge.send_events") == 0
    runs = con.execute("select run_id, trigger, outcome from nudge.runs").fetchall()
    assert runs == [("r1", "abandoned_cart", "paused")]
    audit = con.execute("select action, actor, subject from nudge.audit_log").fetchall()
    assert audit == [("paused", "run:r1", "abandoned_cart")]

    # Pausing another trigger does not pause this one.
    resumed = _dispatch(con, renderer, provider, run_id="r2", paused=frozenset({"birthday"}))
    assert (resumed.outcome, resumed.sent) == ("ok", 2)


def test_a_paused_trigger_does_not_resume_earlier_runs(con, renderer) -> None:
    write_eligibility(con, [cart("k1", "c1")])
    decide(con, run_id="dead")  # a run planned it, then died
    send_id = cart("k1", "c1")["send_id"]
    history = events(con, send_id)
    summary = _dispatch(
        con,
        renderer,
        RecordingProvider(max_batch=100),
        run_id="r2",
        paused=frozenset({"abandoned_cart"}),
    )
    assert summary.outcome == "paused"
    owner = con.execute(
        "select status, run_id from nudge.send_ledger where send_id = ?", [send_id]
    ).fetchone()
    assert owner == ("planned", "dead")
    assert events(con, send_id) == history


def test_dispatch_reports_deferred_and_held_out_sends(con, renderer) -> None:
    write_eligibility(con, [row("birthday", "b1", "c1")], BIRTHDAY)
    write_eligibility(con, [cart("k1", "c1"), cart("k2", "c2"), _not_sent("h", "c3", "holdout")])
    provider = RecordingProvider(max_batch=100)
    summary = _dispatch(con, renderer, provider, competitors=[BIRTHDAY])
    assert (summary.outcome, summary.new, summary.sent) == ("ok", 1, 1)
    assert (summary.deferred, summary.holdout) == (1, 1)
    assert [m.customer_id for m in provider.sent] == ["c2"]
    recorded = con.execute("select new, sent, deferred, holdout from nudge.runs").fetchone()
    assert recorded == (1, 1, 1, 1)


def test_dispatch_applies_the_policy_caps(con, renderer) -> None:
    send_earlier(con, "c1", hours=3)
    write_eligibility(con, [cart("k1", "c1")])
    capped = _dispatch(con, renderer, RecordingProvider(max_batch=100), run_id="r1")
    assert (capped.new, capped.deferred) == (0, 1)
    loose = _dispatch(
        con,
        renderer,
        RecordingProvider(max_batch=100),
        run_id="r2",
        caps=FrequencyCaps(day=2, week=3),
    )
    assert (loose.new, loose.sent, loose.deferred) == (1, 1, 0)


# --- regressions: a same-tick rerun, and pausing a trigger whose templates are broken ------


def test_a_rerun_of_the_same_tick_reports_nothing_deferred(con, renderer) -> None:
    write_eligibility(con, [cart(f"k{i}", f"c{i}") for i in range(3)])
    first = _dispatch(con, renderer, RecordingProvider(max_batch=100), run_id="r1")
    assert (first.new, first.sent, first.deferred) == (3, 3, 0)
    again = _dispatch(
        con, renderer, RecordingProvider(max_batch=100), run_id="r2"
    )  # same as_of, same table
    assert count(con, "nudge.send_ledger where status = 'deferred'") == 0
    assert (again.new, again.sent) == (0, 0)
    assert again.deferred == 0


def test_a_paused_trigger_with_missing_templates_is_still_just_paused(con, tmp_path) -> None:
    write_eligibility(con, [cart("k1", "c1")])
    summary = _dispatch(
        con,
        Renderer(templates_dir=tmp_path / "no-templates"),
        RecordingProvider(max_batch=100),
        paused=frozenset({"abandoned_cart"}),
    )
    assert summary.outcome == "paused"
    assert count(con, "nudge.runs where outcome = 'paused'") == 1


# --- found in review: out-of-order ticks, stale idempotency keys, released rows' provider ---


def test_a_send_by_a_later_tick_counts_for_an_earlier_tick_run_late(con) -> None:
    # A tick of 13:00 already mailed c1; the 12:00 tick re-run afterwards must not mail again.
    send_earlier(con, "c1", hours=-1)
    write_eligibility(con, [cart("k1", "c1")])
    decide(con)
    assert status(con, cart("k1", "c1")["send_id"]) == ("deferred", "frequency_cap_24h")


def test_a_crashed_batch_older_than_the_providers_key_memory_is_unknown(con) -> None:
    write_eligibility(con, [cart("k1", "c1")])
    assert decide(con, run_id="dead").planned == 1
    send_id = cart("k1", "c1")["send_id"]
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=[send_id], key="key-1")
    # The run died while sending, a day ago by the wall clock: the key may be forgotten.
    age_journal(con, 25)
    resume(
        con,
        trigger="abandoned_cart",
        eligibility=CART,
        run_id="r2",
        as_of=AS_OF,
        provider="outbox",
        idempotent=True,
    )
    assert status(con, send_id) == ("unknown", "run_died_while_sending")


def test_a_released_deferred_send_takes_the_releasing_runs_provider(con) -> None:
    send_earlier(con, "c1", hours=3)
    write_eligibility(con, [cart("k1", "c1")])
    decide(con)  # deferred under provider "outbox"
    send_id = cart("k1", "c1")["send_id"]
    later = AS_OF + timedelta(hours=22)
    write_eligibility(con, [cart("k1", "c1", as_of=later)])
    with ledger.planning(
        con, eligibility=CART, run_id="r2", as_of=later, provider="resend"
    ) as decision:
        pass
    assert decision.planned == 1
    assert con.execute(
        "select status, provider from nudge.send_ledger where send_id = ?", [send_id]
    ).fetchall() == [("planned", "resend")]


def test_a_reordered_sequence_does_not_supersede_a_step_by_its_old_position(con) -> None:
    # The YAML dropped two leading steps: "second_reminder" was step 2 when it was sent and is
    # step 1 now, before the new step 2 ("reminder" here). Positions come from the YAML as it
    # is, so the step due now is not taken for one the entry already passed.
    sent_earlier = _step("k", "c1", "second_reminder", 4, as_of=AS_OF - timedelta(hours=30))
    write_eligibility(con, [sent_earlier], HISTORY)
    decide(con, relation=HISTORY, as_of=AS_OF - timedelta(hours=30), run_id="y", caps=LOOSE)
    ledger.settle(
        con,
        run_id="y",
        results=[SendResult(sent_earlier["send_id"], "sent")],
        as_of=AS_OF - timedelta(hours=30),
    )
    now_first = _step(
        "k", "c1", "second_reminder", 1, is_eligible=False, exclusion_reason="already_sent"
    )
    due = _step("k", "c1", "reminder", 2)
    write_eligibility(con, [now_first, due])
    assert decide(con).by_status == {"planned": 1}
    assert status(con, due["send_id"]) == ("planned", None)
