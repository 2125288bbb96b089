"""A simulated week, hour by hour, through the real dbt models and the real send step.

Every hourly tick of five and a half days over a small hand-planted warehouse runs the whole
catalogue (the same ``dispatch_trigger`` the Dagster send assets call, through
``lookahead.replay``) and delivers to the outbox. Each planted customer has one story whose
outcome is known in advance; the tests check the stories and the invariants that must hold for
everyone: every step at most once, in order, inside the recipient's allowed local hours, within
the frequency caps, exits and holdouts respected.

The week runs on a DuckDB file, and (``make test-week-postgres``, which CI runs) on a real
PostgreSQL server loaded with the same raw tables, where dbt compiles the models for its
postgres target and the ledger lives in the database. Every test below holds on both.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.config import POSTGRES_PASSWORD_VAR, Settings
from dagster_project.policy import DispatchPolicy, GuardPolicy
from dagster_project.providers import OutboxProvider
from dagster_project.replay import hourly, replay
from dagster_project.triggers import project_triggers
from dagster_project.warehouse import open_warehouse
from tests.support.mirrors import holdout_bucket
from tests.support.postgres import load_raw, postgres_server

pytestmark = pytest.mark.dbt

START = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)  # a Monday
# The last planted story ends on day 5 at 08:00 (capped's discount, due 72 h after its cart).
# A full week replayed two more days of heartbeats in which nothing was due: 38 ticks, a
# minute or more of the suite, that checked nothing the earlier ticks do not.
END = START + timedelta(days=5, hours=9)
# The week on PostgreSQL adds a minute and a half to the suite: `make test-week-postgres` sets
# this, and .ci/run runs that after `make test`.
POSTGRES_WEEK = "NUDGE_TEST_POSTGRES_WEEK"
# win_back holds out 10 %: buckets below 1000 of 10000 (tests assert the planted ids fit).
HELD_OUT, NOT_HELD_OUT = "lapsed_23", "lapsed_1"


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return START + timedelta(days=day, hours=hour, minutes=minute)


CUSTOMERS = [
    # (customer_id, timezone, birthday, created_at)
    ("w_ny", "America/New_York", None, _at(0, 2)),
    ("w_order", "UTC", None, _at(0, 10)),
    ("cart_berlin", "Europe/Berlin", None, _at(-200, 0)),
    ("cart_order", "UTC", None, _at(-200, 0)),
    ("capped", "UTC", "1990-06-03", _at(-200, 0)),
    ("cart_back", "UTC", None, _at(-200, 0)),
    ("browser", "UTC", None, _at(-200, 0)),
    ("reviewer", "UTC", None, _at(-200, 0)),
    (HELD_OUT, "UTC", None, _at(-400, 0)),
    (NOT_HELD_OUT, "UTC", None, _at(-400, 0)),
]


def _events() -> list[tuple[str, str, str, datetime, dict[str, object]]]:
    cart = {"product_id": "p1", "name": "Mug", "price": 30, "quantity": 1}
    lamp = {"product_id": "p2", "name": "Lamp", "price": 80, "quantity": 1}
    events: list[tuple[str, str, str, datetime, dict[str, object]]] = [
        # Signs up at 22:00 New York time: day_0 waits for 08:00 local, day_3 too.
        ("e1", "w_ny", "signed_up", _at(0, 2), {}),
        # Signs up, then orders on day 1: the welcome series exits after day_0.
        ("e2", "w_order", "signed_up", _at(0, 10), {}),
        ("e3", "w_order", "order_completed", _at(1, 15), {"order_id": "o_w", "revenue": 10}),
        # A 50-unit cart left at 11:00 Berlin: all three cart steps, the second one deferred by
        # the 24 h cap until a day after the first.
        ("e4", "cart_berlin", "product_added", _at(0, 9), {"cart_id": "k_b", **cart}),
        ("e5", "cart_berlin", "product_added", _at(0, 9, 5), {"cart_id": "k_b", **cart}),
        # Ordered two hours later: the reminder went, nothing after it.
        ("e6", "cart_order", "product_added", _at(0, 13), {"cart_id": "k_o", **cart}),
        ("e7", "cart_order", "order_completed", _at(0, 15), {"cart_id": "k_o", "order_id": "o_o"}),
        # Cart reminder (priority 80) and birthday (70) due at the same 09:00 tick: the cart
        # wins the day's only slot, the birthday is deferred and expires at local midnight.
        ("e8", "capped", "product_added", _at(2, 7, 30), {"cart_id": "k_c", **cart}),
        # Unsubscribed while the reminders were due, back in time for the discount on day 3;
        # then the cart is edited (same episode), entered_at moves and the reminders fall due
        # again: a sequence only moves forward, so they are superseded, never sent.
        ("e16", "cart_back", "product_added", _at(0, 9), {"cart_id": "k_back", **cart}),
        ("e17", "cart_back", "product_added", _at(3, 15), {"cart_id": "k_back", **cart}),
        # Views a lamp twice on day 0 (one email), twice again on day 3 (blocked: 30 days).
        ("e9", "browser", "product_viewed", _at(0, 12), lamp),
        ("e10", "browser", "product_viewed", _at(0, 13), lamp),
        ("e11", "browser", "product_viewed", _at(3, 12), lamp),
        ("e12", "browser", "product_viewed", _at(3, 13), lamp),
        # Ordered 10 days before day 3: the review request goes on day 3 at 10:00.
        (
            "e13",
            "reviewer",
            "order_completed",
            _at(-7, 10),
            {"order_id": "o_r", "products": [lamp]},
        ),
        # Lapsed: last activity 90 days before day 2, 10:00.
        ("e14", HELD_OUT, "order_completed", _at(2 - 90, 10), {"order_id": "o_h"}),
        ("e15", NOT_HELD_OUT, "order_completed", _at(2 - 90, 10), {"order_id": "o_n"}),
    ]
    # A heartbeat of anonymous-ish activity so the source freshness guard never holds the
    # absence triggers (a real shop has events every hour).
    for hour in range(-2, 24 * 7 + 1):
        events.append((f"hb{hour}", "heartbeat", "page_viewed", START + timedelta(hours=hour), {}))
    return events


def _build_warehouse(path: Path) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema raw")
        con.execute(
            "create table raw.customers (customer_id varchar, email varchar, first_name varchar,"
            " timezone varchar, birthday date, created_at timestamptz)"
        )
        con.execute(
            "create table raw.events (event_id varchar, customer_id varchar, event_name varchar,"
            " occurred_at timestamptz, properties varchar)"
        )
        con.execute(
            "create table raw.subscriptions (customer_id varchar, list varchar, status varchar,"
            " changed_at timestamptz)"
        )
        for cid, tz, birthday, created in CUSTOMERS:
            con.execute(
                "insert into raw.customers values (?, ?, 'Sam', ?, ?, ?)",
                [cid, f"{cid}@example.com", tz, birthday, created],
            )
            con.execute(
                "insert into raw.subscriptions values (?, 'marketing', 'subscribed', ?)",
                [cid, created - timedelta(minutes=1)],
            )
        con.execute(
            "insert into raw.subscriptions values ('cart_back', 'marketing', 'unsubscribed', ?),"
            " ('cart_back', 'marketing', 'subscribed', ?)",
            [_at(-1, 0), _at(2, 12)],
        )
        for event_id, cid, name, at, props in _events():
            con.execute(
                "insert into raw.events values (?, ?, ?, ?, ?)",
                [event_id, cid, name, at, json.dumps(props)],
            )
        ledger.ensure_ledger(con)
    finally:
        con.close()


@dataclass
class Week:
    warehouse: Path
    outbox: Path
    # send_id -> (trigger, trigger_key, step, customer_id, status, reason, sent_as_of)
    rows: dict[str, tuple[str, str, str, str, str, str | None, datetime | None]]
    events: list[tuple[str, str]]  # (send_id, status) history
    # (send_id, status, reason, tick) history, in the order it was recorded
    history: list[tuple[str, str, str | None, datetime]]
    relations: set[str]  # schema.table of every relation the replay built


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def week(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Week]:
    """The week replayed on a DuckDB file, then on a PostgreSQL database loaded with the same
    raw tables (dbt compiles the models for its postgres target)."""
    assert holdout_bucket("win_back", HELD_OUT) < 1000 <= holdout_bucket("win_back", NOT_HELD_OUT)
    engine = request.param
    if engine == "postgres" and not os.environ.get(POSTGRES_WEEK):
        # The suite stays under its time budget; CI runs it (`make test-week-postgres`).
        pytest.skip(f"the week on PostgreSQL runs with {POSTGRES_WEEK}=1 (make test-week-postgres)")
    folder = tmp_path_factory.mktemp(f"week_{engine}")
    duckdb_file = folder / "week.duckdb"
    _build_warehouse(duckdb_file)
    warehouse: Path | Settings = duckdb_file
    with contextlib.ExitStack() as stack:
        if engine == "postgres":
            server = stack.enter_context(postgres_server())
            database = server.new_database("week")
            load_raw(duckdb_file, database)
            state = folder / "state"
            warehouse = Settings(warehouse=state / "week", postgres=database.settings(state))
            with contextlib.closing(open_warehouse(warehouse)) as con:
                ledger.ensure_ledger(con)
            # dbt reads the password from the environment only, as in production.
            patch = stack.enter_context(pytest.MonkeyPatch.context())
            patch.setenv(POSTGRES_PASSWORD_VAR, database.password)
        specs, relations = project_triggers()
        outbox = folder / "outbox"
        replay(
            warehouse,
            hourly(START, END),
            provider=OutboxProvider(outbox),
            specs=specs,
            relations=relations,
            policy=DispatchPolicy(guards=GuardPolicy()),
            from_email="shop@example.com",
        )
        with contextlib.closing(open_warehouse(warehouse)) as con:
            rows = {
                r[0]: r[1:]
                for r in con.execute(
                    "select send_id, trigger, trigger_key, step, customer_id, status, reason,"
                    " sent_as_of from nudge.send_ledger"
                ).fetchall()
            }
            events = con.execute("select send_id, status from nudge.send_events").fetchall()
            history = con.execute(
                "select send_id, status, reason, as_of from nudge.send_events"
                " order by recorded_at, as_of"
            ).fetchall()
            built = {
                f"{schema}.{name}"
                for schema, name in con.execute(
                    "select table_schema, table_name from information_schema.tables"
                    " where table_catalog = current_database()"
                ).fetchall()
            }
        yield Week(duckdb_file, outbox, rows, events, history, built)


def _sends(week: Week, customer: str) -> list[tuple[str, str, datetime]]:
    """(trigger, step, tick it went out) of a customer's sent emails, in order."""
    return sorted(
        (
            (t, s, at)
            for t, _, s, c, status, _, at in week.rows.values()
            if c == customer and status == "sent" and at is not None
        ),
        key=lambda x: x[2],
    )


def _status(week: Week, customer: str, trigger: str, step: str) -> tuple[str, str | None]:
    found = [
        (status, reason)
        for t, _, s, c, status, reason, _ in week.rows.values()
        if c == customer and t == trigger and s == step
    ]
    assert len(found) == 1, (customer, trigger, step, found)
    return found[0]


def test_every_sent_email_was_delivered_exactly_once(week: Week) -> None:
    sent = {sid for sid, row in week.rows.items() if row[4] == "sent"}
    delivered = [p.stem for p in week.outbox.rglob("*.eml")]
    assert sorted(delivered) == sorted(sent)
    sent_events = [sid for sid, status in week.events if status == "sent"]
    assert len(sent_events) == len(set(sent_events)) == len(sent)


def test_welcome_waits_for_local_morning_and_steps_follow_in_order(week: Week) -> None:
    # 02:00 UTC is 22:00 in New York: day_0 goes at 08:00 local (12:00 UTC), day_3 likewise.
    assert _sends(week, "w_ny") == [
        ("welcome", "day_0", _at(0, 12)),
        ("welcome", "day_3", _at(3, 12)),
    ]


def test_an_order_exits_the_welcome_series(week: Week) -> None:
    # The order itself is confirmed by the next tick (transactional: no cap, no quiet hours).
    assert _sends(week, "w_order") == [
        ("welcome", "day_0", _at(0, 10)),
        ("order_confirmation", "confirmation", _at(1, 15)),
    ]
    welcome = [r for r in week.rows.values() if r[3] == "w_order" and r[0] == "welcome"]
    assert welcome and all(r[2] == "day_0" for r in welcome)


def test_cart_sequence_runs_all_steps_with_the_cap_spacing_them(week: Week) -> None:
    sends = _sends(week, "cart_berlin")
    assert [(t, s) for t, s, _ in sends] == [
        ("abandoned_cart", "reminder"),
        ("abandoned_cart", "second_reminder"),
        ("abandoned_cart", "discount"),
    ]
    # Last change 09:05 UTC: reminder at the 11:00 tick (due 10:05); second reminder due 24 h
    # after the change but deferred by the 1-per-24h cap to a day after the reminder.
    assert [at for _, _, at in sends] == [_at(0, 11), _at(1, 11), _at(3, 10)]
    assert any(
        status == "deferred"
        for sid, status in week.events
        if week.rows[sid][3] == "cart_berlin" and week.rows[sid][2] == "second_reminder"
    )


def test_an_order_exits_the_cart_sequence(week: Week) -> None:
    assert _sends(week, "cart_order") == [
        ("abandoned_cart", "reminder", _at(0, 14)),
        ("order_confirmation", "confirmation", _at(0, 15)),
    ]


def test_priority_wins_the_slot_and_the_deferred_birthday_expires(week: Week) -> None:
    # The cart reminder wins the day-2 slot; its next steps follow a cap slot apart, the
    # discount last, inside the replayed days (three emails in a week: the weekly cap's edge).
    assert _sends(week, "capped") == [
        ("abandoned_cart", "reminder", _at(2, 9)),
        ("abandoned_cart", "second_reminder", _at(3, 9)),
        ("abandoned_cart", "discount", _at(5, 8)),
    ]
    assert _status(week, "capped", "birthday", "greeting") == ("expired", "grace_window_ended")
    history = [status for sid, status in week.events if week.rows[sid][:1] == ("birthday",)]
    assert "deferred" in history


def test_browse_abandonment_once_per_product_per_30_days(week: Week) -> None:
    assert _sends(week, "browser") == [("browse_abandonment", "viewed_product", _at(0, 15))]


def test_review_request_ten_days_after_the_order(week: Week) -> None:
    assert _sends(week, "reviewer") == [("post_purchase_review", "review", _at(3, 10))]


def test_holdout_is_recorded_and_never_sent(week: Week) -> None:
    assert _status(week, HELD_OUT, "win_back", "we_miss_you") == ("holdout", "holdout")
    assert _sends(week, HELD_OUT) == []
    assert _sends(week, NOT_HELD_OUT) == [("win_back", "we_miss_you", _at(2, 10))]


def test_nobody_is_mailed_in_quiet_hours_or_over_the_caps(week: Week) -> None:
    zones = {cid: ZoneInfo(tz) for cid, tz, _, _ in CUSTOMERS}
    # Quiet hours and caps are marketing rules: an order confirmation goes at any hour.
    marketing = {spec.name for spec in project_triggers()[0] if spec.category == "marketing"}
    by_customer: dict[str, list[datetime]] = {}
    for trigger, _, step, customer, status, _, at in week.rows.values():
        if status != "sent" or trigger not in marketing:
            continue
        assert at is not None
        local = at.astimezone(zones[customer])
        assert 8 <= local.hour < 21, (trigger, step, customer, local)
        by_customer.setdefault(customer, []).append(at)
    for customer, times in by_customer.items():
        times.sort()
        for earlier, later in itertools.pairwise(times):
            assert later - earlier >= timedelta(hours=24), customer
        for first in times:
            assert sum(first <= t < first + timedelta(days=7) for t in times) <= 3, customer


def test_steps_of_an_entry_never_overtake_each_other(week: Week) -> None:
    step_order = {s.name: i for spec in project_triggers()[0] for i, s in enumerate(spec.steps)}
    by_entry: dict[tuple[str, str], list[tuple[datetime, int]]] = {}
    for trigger, key, step, _, status, _, at in week.rows.values():
        if status == "sent" and at is not None:
            by_entry.setdefault((trigger, key), []).append((at, step_order[step]))
    assert by_entry, "the week sent nothing"
    for entry, sends in by_entry.items():
        sends.sort()
        assert [i for _, i in sends] == sorted(i for _, i in sends), entry


def test_a_sequence_only_moves_forward_even_when_its_entry_moves(week: Week) -> None:
    # The discount went out on day 3; the cart edit that afternoon moved entered_at, and the
    # two reminders fell due again: recorded as superseded, never sent.
    assert _sends(week, "cart_back") == [("abandoned_cart", "discount", _at(3, 9))]
    for step in ("reminder", "second_reminder"):
        assert _status(week, "cart_back", "abandoned_cart", step) == ("skipped", "superseded")


# Statuses that mean an entry's sequence has reached a step: handed over or settled on purpose.
REACHED = {
    "sending",
    "sent",
    "unknown",
    "failed_retryable",
    "failed_permanent",
    "skipped",
    "holdout",
}


def test_no_entry_is_ever_sent_a_step_before_one_it_already_reached(week: Week) -> None:
    """The forward-only invariant, for every entry of the week, from the full history."""
    step_order = {
        (spec.name, s.name): i for spec in project_triggers()[0] for i, s in enumerate(spec.steps)
    }
    reached: dict[tuple[str, str], tuple[int, datetime]] = {}
    checked = 0
    for send_id, status, _, tick in week.history:
        trigger, key, step = week.rows[send_id][:3]
        index = step_order[(trigger, step)]
        furthest = reached.get((trigger, key))
        if status == "sent":
            checked += 1
            assert furthest is None or furthest[0] <= index, (
                f"{trigger} {key}: {step} sent at {tick} after step {furthest[0] + 1} was "
                f"reached at {furthest[1]}"
            )
        if status in REACHED and (furthest is None or index > furthest[0]):
            reached[(trigger, key)] = (index, tick)
    assert checked >= 10, "the week sent too little to check"


def test_replayed_ticks_build_what_a_tick_builds_and_not_the_reports(week: Week) -> None:
    # The reporting models are the daily job's: rebuilding them every replayed hour only cost
    # time. The tick's own models, the new ones included, are all there.
    assert not {r for r in week.relations if r.startswith("reporting.")}
    assert {
        "intermediate.int_customers__best_send_hour",
        "intermediate.int_customers__product_picks",
        "audience.win_back_eligibility",
    } <= week.relations
    assert "intermediate.int_sends__touches" not in week.relations
