"""Guards before anything is sent: mass-send, source freshness, consent at push time."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from dagster_project import guards
from dagster_project.policy import DispatchPolicy, GuardPolicy
from dagster_project.providers import OutboxProvider, SendResult
from tests.support.factories import (
    AS_OF,
    CART_SPEC,
    add_event,
    add_subscription,
    cart_row,
    cart_spec,
    dispatch,
    ledger_rows,
    write_eligibility,
)
from tests.support.ledger_steps import hand_over, journal, plan
from tests.support.mirrors import send_id
from tests.support.providers import RecordingProvider


@pytest.fixture
def con(engine_con):  # type: ignore[no-untyped-def]
    """These tests run on DuckDB and on PostgreSQL (the same statements)."""
    return engine_con


POLICY = GuardPolicy(mass_send_max=1000, mass_send_multiple=10, mass_send_min=20)


@pytest.mark.parametrize(
    ("new", "recent", "approved", "held"),
    [
        (0, [], False, False),
        (1001, [], False, True),  # over the absolute cap, no history needed
        (1001, [], True, False),  # ... unless approved
        (500, [], False, False),  # no baseline yet: only the cap applies
        (500, [10, 12], False, False),  # two busy ticks are not a baseline
        (500, [10, 0, 0, 12, 9, 0], False, True),  # median of busy ticks is 10: 500 > 100
        (100, [10, 0, 0, 12, 9, 0], False, False),  # 100 is not more than 10x 10
        (19, [1, 1, 1], False, False),  # below mass_send_min the multiple rule is silent
        (20, [1, 1, 1], False, True),
    ],
)
def test_mass_send_hold(new, recent, approved, held) -> None:
    policy = dataclasses.replace(POLICY, approved=frozenset({"t"} if approved else set()))
    reason = guards.mass_send_hold("t", new, recent, policy)
    assert (reason is not None) is held
    if held:
        assert str(new) in reason and "NUDGE_MASS_SEND" in reason


def test_freshness_hold() -> None:
    policy = GuardPolicy(freshness_max_hours=6)
    assert guards.freshness_hold("t", AS_OF - timedelta(hours=6), AS_OF, policy) is None
    reason = guards.freshness_hold("t", AS_OF - timedelta(hours=6, seconds=1), AS_OF, policy)
    assert reason and "6.0 h old" in reason
    assert "no events" in (guards.freshness_hold("t", None, AS_OF, policy) or "")
    approved = GuardPolicy(freshness_max_hours=6, approved=frozenset({"t"}))
    assert guards.freshness_hold("t", None, AS_OF, approved) is None


def _dispatch(con, provider, *, spec=CART_SPEC, as_of=AS_OF, run_id="r1", cutoff=None, **policy):
    return dispatch(
        con,
        provider,
        spec=spec,
        as_of=as_of,
        run_id=run_id,
        policy=DispatchPolicy(guards=dataclasses.replace(POLICY, **policy)),
        consent_cutoff=cutoff,
    )


def _runs(con) -> list[tuple]:
    return con.execute(
        "select run_id, outcome, new, sent, held, hold_reason is not null from nudge.runs "
        "order by as_of"
    ).fetchall()


def test_a_mass_send_is_held_until_approved(con) -> None:
    write_eligibility(con, [cart_row(f"k{i}") for i in range(30)])
    provider = RecordingProvider()
    held = _dispatch(con, provider, mass_send_max=25)
    assert (held.outcome, held.held, held.new, held.sent) == ("held", 30, 0, 0)
    assert held.held_by == "mass_send" and "cap of 25" in (held.hold_reason or "")
    assert provider.sent == [] and ledger_rows(con) == {}  # nothing planned, nothing sent
    assert _runs(con) == [("r1", "held", 0, 0, 30, True)]

    released = _dispatch(con, provider, run_id="r2", mass_send_max=25, approved={"abandoned_cart"})
    assert (released.outcome, released.new, released.sent, released.held) == ("ok", 30, 30, 0)
    assert len(provider.sent) == 30


def test_the_multiple_rule_uses_the_trigger_history_in_nudge_runs(con) -> None:
    provider = RecordingProvider()
    # Three quiet ticks of 3 sends each form the baseline...
    for hour in range(3):
        as_of = AS_OF + timedelta(hours=hour)
        write_eligibility(con, [cart_row(f"h{hour}-{i}", as_of=as_of) for i in range(3)])
        assert _dispatch(con, provider, as_of=as_of, run_id=f"q{hour}").sent == 3
    # ...so 40 new sends (> 10 x 3, and >= mass_send_min) are held.
    spike_at = AS_OF + timedelta(hours=3)
    write_eligibility(con, [cart_row(f"s{i}", as_of=spike_at) for i in range(40)])
    spike = _dispatch(con, provider, as_of=spike_at, run_id="spike")
    assert spike.outcome == "held" and "median of 3" in (spike.hold_reason or "")
    assert len(provider.sent) == 9


def test_an_absence_trigger_is_held_when_events_are_stale(con) -> None:
    spec = cart_spec(fires_on_absence=True)
    assert spec.fires_on_absence
    write_eligibility(con, [cart_row("a"), cart_row("b")])
    provider = RecordingProvider()
    add_event(con, "c1", AS_OF - timedelta(hours=30))
    stale = _dispatch(con, provider, spec=spec, freshness_max_hours=24)
    assert (stale.outcome, stale.held_by, stale.held, stale.sent) == (
        "held",
        "source_freshness",
        2,
        0,
    )
    assert ledger_rows(con) == {}
    add_event(con, "c1", AS_OF - timedelta(hours=1))
    fresh = _dispatch(con, provider, spec=spec, run_id="r2", freshness_max_hours=24)
    assert (fresh.outcome, fresh.sent) == ("ok", 2)


def test_a_held_trigger_still_settles_what_a_dead_push_was_answered(con) -> None:
    # A push died after its provider answered; the next tick holds the trigger (stale events).
    # The answer is a fact: the send is recorded sent at once, not left planned through the
    # hold, where the deliverability guard and the frequency caps would not count it.
    spec = cart_spec(fires_on_absence=True)
    write_eligibility(con, [cart_row("a")])
    plan(con, eligibility=spec.relation, run_id="dead", as_of=AS_OF, provider="recording")
    answered = send_id("abandoned_cart", "a", "reminder")
    answer = SendResult(answered, "sent", provider_message_id="m-a")
    hand_over(con, run_id="dead", trigger=spec.name, send_ids=[answered], answers=[answer])
    add_event(con, "c1", AS_OF - timedelta(hours=30))
    provider = RecordingProvider()
    held = _dispatch(con, provider, spec=spec, run_id="held", freshness_max_hours=24)
    assert (held.outcome, held.held_by, held.resumed) == ("held", "source_freshness", 1)
    assert ledger_rows(con)[answered][0] == "sent"

    add_event(con, "c1", AS_OF - timedelta(hours=1))
    fresh = _dispatch(con, provider, spec=spec, run_id="fresh", freshness_max_hours=24)
    assert (fresh.outcome, provider.sent) == ("ok", [])
    assert journal(con).is_empty()


def test_stale_events_do_not_hold_a_trigger_that_fires_on_presence(con) -> None:
    write_eligibility(con, [cart_row("a")])
    add_event(con, "c1", AS_OF - timedelta(days=30))
    summary = _dispatch(con, RecordingProvider(), spec=CART_SPEC, freshness_max_hours=24)
    assert not CART_SPEC.fires_on_absence
    assert (summary.outcome, summary.sent) == ("ok", 1)


def test_an_unsubscribe_after_the_build_is_honoured_at_push_time(con, tmp_path: Path) -> None:
    write_eligibility(con, [cart_row("stays"), cart_row("leaves"), cart_row("rejoins")])
    add_subscription(con, "cust_leaves", "unsubscribed", AS_OF + timedelta(minutes=3))
    add_subscription(con, "cust_rejoins", "unsubscribed", AS_OF + timedelta(minutes=1))
    add_subscription(con, "cust_rejoins", "subscribed", AS_OF + timedelta(minutes=2))
    provider = OutboxProvider(tmp_path / "outbox")
    summary = _dispatch(con, provider, cutoff=AS_OF + timedelta(minutes=5))
    assert (summary.sent, summary.skipped) == (2, 1)
    leaves = ledger_rows(con)[cart_row("leaves")["send_id"]]
    assert leaves[0] == "skipped"
    (reason,) = con.execute(
        "select reason from nudge.send_ledger where customer_id = 'cust_leaves'"
    ).fetchone()
    assert reason == "unsubscribed_before_send"
    assert sorted(p.name for p in (tmp_path / "outbox").glob("*/*.eml")) == sorted(
        f"{cart_row(k)['send_id']}.eml" for k in ("stays", "rejoins")
    )


def test_consent_after_the_cutoff_is_the_future_for_a_simulated_tick(con) -> None:
    write_eligibility(con, [cart_row("later")])
    add_subscription(con, "cust_later", "unsubscribed", AS_OF + timedelta(days=2))
    assert _dispatch(con, RecordingProvider(), cutoff=AS_OF).sent == 1


def test_transactional_triggers_skip_the_marketing_consent_recheck(con) -> None:
    spec = cart_spec(category="transactional")
    write_eligibility(con, [cart_row("receipt", category="transactional")])
    add_subscription(con, "cust_receipt", "unsubscribed", AS_OF + timedelta(minutes=1))
    assert (
        _dispatch(con, RecordingProvider(), spec=spec, cutoff=AS_OF + timedelta(hours=1)).sent == 1
    )


def test_a_failed_push_still_leaves_its_run_log_row(con) -> None:
    write_eligibility(con, [cart_row("a")])
    with pytest.raises(RuntimeError, match="exploded"):
        _dispatch(con, RecordingProvider(fail=True))
    (outcome, errors) = con.execute("select outcome, errors from nudge.runs").fetchone()
    assert outcome == "failed" and "provider exploded" in errors
    # The provider failed before handing anything over: the row stays planned and the journal
    # shows no hand-over, so the next run sends it (nothing in doubt, nothing lost).
    assert ledger_rows(con)[cart_row("a")["send_id"]][0] == "planned"
    assert journal(con).is_empty()


def test_an_unsubscribe_during_a_long_push_is_honoured_by_the_next_batch(con) -> None:
    # Batch 1 goes out; while it does, c_b unsubscribes (recorded "now"). The push asks its
    # consent cutoff again before batch 2, so c_b is not mailed.
    write_eligibility(con, [cart_row("a"), cart_row("b")])
    clock = [AS_OF]
    others = {"cust_a": "cust_b", "cust_b": "cust_a"}

    class UnsubscribesWhileSending(RecordingProvider):
        def send(self, messages, **kwargs):  # type: ignore[no-untyped-def]
            results = super().send(messages, **kwargs)
            if len(self.sent) == 1:  # the other customer says no while this batch goes out
                clock[0] = AS_OF + timedelta(minutes=5)
                other = others[self.sent[0].customer_id]
                add_subscription(con, other, "unsubscribed", AS_OF + timedelta(minutes=1))
            return results

    provider = UnsubscribesWhileSending()
    summary = dispatch(
        con, provider, policy=DispatchPolicy(batch_size=1), consent_cutoff=lambda: clock[0]
    )
    assert len(provider.sent) == 1
    assert summary.skipped == 1 and summary.sent == 1
