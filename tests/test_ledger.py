"""The ledger's claims, state changes, migrations and crash recovery, on a real DuckDB file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.handover import HandoverJournal
from dagster_project.policy import RetryPolicy
from dagster_project.providers import SendResult
from dagster_project.warehouse import journal_dir
from tests.support.factories import AS_OF, CART_SPEC, cart_row, ledger_rows, write_eligibility
from tests.support.ledger_steps import age_journal, hand_over, journal, plan, resume
from tests.support.mirrors import send_id


@pytest.fixture
def con(engine_con):  # type: ignore[no-untyped-def]
    """Every ledger test runs on DuckDB and on PostgreSQL (the same statements)."""
    return engine_con


def test_the_ledger_is_created_once_and_upgrades_apply_once(tmp_path) -> None:
    con = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    try:
        applied = ledger.ensure_ledger(con)
        migrations = sorted(p.stem for p in ledger.MIGRATIONS_DIR.glob("*.sql"))
        assert applied == migrations and len(migrations) >= 4
        assert ledger.ensure_ledger(con) == []  # up to date: nothing runs again
        tables = {
            r[0]
            for r in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'nudge'"
            ).fetchall()
        }
        assert {"send_ledger", "send_events", "runs", "migrations"} <= tables
    finally:
        con.close()


def test_plan_claims_only_due_eligible_rows_not_in_ledger(con: duckdb.DuckDBPyConnection) -> None:
    write_eligibility(
        con,
        [
            cart_row("due"),
            cart_row("excluded", is_eligible=False, exclusion_reason="unsubscribed"),
            cart_row("future", due_at=AS_OF + timedelta(minutes=1)),
            cart_row("expired", expires_at=AS_OF - timedelta(seconds=1)),
        ],
    )
    planned = plan(con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="outbox")
    assert planned == 1
    assert ledger_rows(con) == {send_id("abandoned_cart", "due", "reminder"): ("planned", None, 0)}


def test_plan_twice_claims_each_send_once(con: duckdb.DuckDBPyConnection) -> None:
    write_eligibility(con, [cart_row("a"), cart_row("b")])
    first = plan(con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="x")
    second = plan(con, eligibility=CART_SPEC.relation, run_id="r2", as_of=AS_OF, provider="x")
    assert (first, second) == (2, 0)
    owners = {r[0] for r in con.execute("select run_id from nudge.send_ledger").fetchall()}
    assert owners == {"r1"}


def test_settle_records_results(con: duckdb.DuckDBPyConnection) -> None:
    write_eligibility(con, [cart_row("a"), cart_row("b")])
    plan(con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="x")
    ids = [send_id("abandoned_cart", k, "reminder") for k in ("a", "b")]
    handed_over_at = datetime.now(UTC)
    ledger.settle(
        con,
        run_id="r1",
        as_of=AS_OF,
        results=[
            SendResult(ids[0], "sent", provider_message_id="m-1"),
            SendResult(ids[1], "failed", error="400: invalid address", attempts=1),
        ],
        handed_over_at=handed_over_at,
    )
    rows = ledger_rows(con)
    assert rows[ids[0]] == ("sent", None, 1)
    assert rows[ids[1]] == ("failed_permanent", "400: invalid address", 1)
    assert ledger.status_counts(con, trigger="abandoned_cart", run_id="r1") == {
        "sent": 1,
        "failed_permanent": 1,
    }
    sending_at, sent_as_of = con.execute(
        "select sending_at, sent_as_of from nudge.send_ledger where send_id = ?", [ids[0]]
    ).fetchall()[0]
    assert (sending_at, sent_as_of) == (handed_over_at, AS_OF)


def test_a_push_journal_is_deleted_once_every_batch_settled_and_kept_when_it_dies(
    con: duckdb.DuckDBPyConnection,
) -> None:
    directory = journal_dir(con)
    with HandoverJournal(directory, run_id="r1", trigger="abandoned_cart") as finished:
        finished.handing_over(["a"], "k")
        assert finished.path.exists()  # on disk before the request goes out
    assert not finished.path.exists()
    with (
        pytest.raises(RuntimeError),
        HandoverJournal(directory, run_id="r2", trigger="abandoned_cart") as dying,
    ):
        dying.handing_over(["b"], "k")
        raise RuntimeError("the push failed before its batch settled")
    assert dying.path.exists()
    assert list(journal(con)["send_id"]) == ["b"]


def _journal(con: duckdb.DuckDBPyConnection) -> int:
    return len(journal(con))


def _leave_dead_run(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """A run 'dead' planned five sends and handed one to the ESP before it died."""
    keys = ["planned", "sending", "late", "unsubscribed", "ordered"]
    rows = [cart_row(k) for k in keys]
    rows[keys.index("late")]["expires_at"] = AS_OF + timedelta(minutes=30)
    write_eligibility(con, rows)
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="x")
    ids = {k: send_id("abandoned_cart", k, "reminder") for k in keys}
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=[ids["sending"]], key="k1")
    return ids


def _next_tick_eligibility(con: duckdb.DuckDBPyConnection, later) -> None:
    """What the next tick's dbt build sees: one customer unsubscribed, one cart was ordered."""
    rows = []
    for key in ["planned", "sending", "late", "unsubscribed"]:
        row = cart_row(key, as_of=later, is_eligible=False, exclusion_reason="in_flight")
        row["rule_exclusion_reason"] = "unsubscribed" if key == "unsubscribed" else None
        if key == "late":
            row["expires_at"] = AS_OF + timedelta(minutes=30)
            row["rule_exclusion_reason"] = "expired"
        if key == "planned":
            row["first_name"] = "Annie"  # the customer fixed their name since
        rows.append(row)
    write_eligibility(con, rows)  # the ordered cart has left the trigger altogether


def test_resume_rechecks_unfinished_sends_against_the_current_eligibility(con) -> None:
    ids = _leave_dead_run(con)
    later = AS_OF + timedelta(hours=1)
    _next_tick_eligibility(con, later)
    counts = resume(
        con,
        trigger="abandoned_cart",
        eligibility=CART_SPEC.relation,
        run_id="next",
        as_of=later,
        provider="outbox",
        idempotent=True,
    )
    rows = ledger_rows(con)
    assert rows[ids["planned"]][0] == "planned"  # never reached the ESP: safe to send
    assert rows[ids["sending"]][0] == "unknown"  # may have been delivered: never resent
    assert "delivery unknown" in rows[ids["sending"]][1]
    assert rows[ids["late"]][0] == "expired"
    assert rows[ids["unsubscribed"]] == ("skipped", "no longer eligible: unsubscribed", 0)
    assert rows[ids["ordered"]][0] == "skipped"
    assert "no longer a candidate" in rows[ids["ordered"]][1]
    assert counts == {"planned": 1, "unknown": 1, "expired": 1, "skipped": 2}
    # The resumed send renders from the current row, not the stale one.
    (context,) = con.execute(
        "select context ->> 'first_name' from nudge.send_ledger where send_id = $id",
        {"id": ids["planned"]},
    ).fetchone()
    assert context == "Annie"


def test_resume_resends_in_flight_rows_only_through_an_idempotent_provider(con) -> None:
    ids = _leave_dead_run(con)
    con.execute("update nudge.send_ledger set provider = 'outbox'")
    _next_tick_eligibility(con, AS_OF)
    resume(
        con,
        trigger="abandoned_cart",
        eligibility=CART_SPEC.relation,
        run_id="next",
        as_of=AS_OF,
        provider="outbox",
        idempotent=True,
    )
    assert ledger_rows(con)[ids["sending"]][0] == "planned"


def test_a_retryable_failure_is_resumed_and_a_permanent_one_is_not(con) -> None:
    write_eligibility(con, [cart_row("blip"), cart_row("rejected")])
    plan(con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="x")
    blip, rejected = (send_id("abandoned_cart", k, "reminder") for k in ("blip", "rejected"))
    ledger.settle(
        con,
        run_id="r1",
        as_of=AS_OF,
        results=[
            SendResult(blip, "failed", error="HTTP 503", attempts=5, retryable=True),
            SendResult(rejected, "failed", error="HTTP 400: bad address", attempts=1),
        ],
    )
    assert ledger_rows(con)[blip] == ("failed_retryable", "HTTP 503", 5)
    assert ledger_rows(con)[rejected] == ("failed_permanent", "HTTP 400: bad address", 1)
    later = AS_OF + timedelta(hours=1)
    write_eligibility(
        con,
        [
            {
                **cart_row(k, as_of=later, is_eligible=False, exclusion_reason=r),
                "rule_exclusion_reason": None,
            }
            for k, r in (("blip", "retrying"), ("rejected", "already_failed"))
        ],
    )
    counts = resume(
        con,
        trigger="abandoned_cart",
        eligibility=CART_SPEC.relation,
        run_id="r2",
        as_of=later,
        provider="x",
        idempotent=False,
    )
    assert counts == {"planned": 1}
    assert ledger_rows(con)[blip][0] == "planned"
    assert ledger_rows(con)[rejected][0] == "failed_permanent"


def _one_failed_retryable(con, *, attempts: int = 1) -> str:
    write_eligibility(con, [cart_row("blip")])
    plan(con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="x")
    blip = send_id("abandoned_cart", "blip", "reminder")
    # Earlier ticks' attempts: this failure is the attempts-th.
    con.execute("update nudge.send_ledger set attempts = ?", [attempts - 1])
    ledger.settle(
        con,
        run_id="r1",
        as_of=AS_OF,
        results=[SendResult(blip, "failed", error="HTTP 503", retryable=True)],
        retry=RetryPolicy(base_minutes=15, max_backoff_minutes=60),
    )
    return blip


def _resume(con, as_of, *, provider="x", idempotent=False, run_id="next", **retry):
    return resume(
        con,
        trigger="abandoned_cart",
        eligibility=CART_SPEC.relation,
        run_id=run_id,
        as_of=as_of,
        provider=provider,
        idempotent=idempotent,
        retry=RetryPolicy(**retry),
    )


@pytest.mark.parametrize(("attempts", "wait_minutes"), [(1, 15), (2, 30), (3, 60), (6, 60)])
def test_retryable_failures_back_off_across_ticks(con, attempts, wait_minutes) -> None:
    blip = _one_failed_retryable(con, attempts=attempts)
    (next_attempt,) = con.execute("select next_attempt_at from nudge.send_ledger").fetchone()
    assert next_attempt == AS_OF + timedelta(minutes=wait_minutes)
    # A tick before the wait is over leaves it alone; the first tick after it retries it.
    assert _resume(con, next_attempt - timedelta(seconds=1)) == {}
    assert ledger_rows(con)[blip][0] == "failed_retryable"
    assert _resume(con, next_attempt) == {"planned": 1}


def test_a_retryable_failure_gives_up_after_the_maximum_age(con) -> None:
    blip = _one_failed_retryable(con)
    write_eligibility(con, [cart_row("blip", expires_at=AS_OF + timedelta(days=5))])
    assert _resume(con, AS_OF + timedelta(hours=3, minutes=1), max_age_hours=3) == {
        "failed_permanent": 1
    }
    status, error, _ = ledger_rows(con)[blip]
    assert status == "failed_permanent"
    assert error.startswith("gave up retrying after 1 attempts: HTTP 503")
    (reason,) = con.execute("select reason from nudge.send_ledger").fetchone()
    assert reason == "retry_max_age"


def _interrupted_batch(con, keys: list[str], provider: str = "resend") -> list[str]:
    """A run sent one request through ``provider`` and died before its answer was read."""
    write_eligibility(con, [cart_row(k) for k in keys])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider=provider)
    ids = [send_id("abandoned_cart", k, "reminder") for k in keys]
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=ids, key="key-1")
    return ids


def test_an_interrupted_idempotent_request_is_resent_whole_with_its_key(con) -> None:
    ids = _interrupted_batch(con, ["a", "b", "c"])
    assert _resume(con, AS_OF, provider="resend", idempotent=True) == {"planned": 3}
    batches = ledger.planned_batches(con, trigger="abandoned_cart", run_id="next", batch_size=2)
    # One batch with the same three send_ids and the same key, whatever the batch size.
    assert [(sorted(r[0] for r in b), {r[3] for r in b}) for b in batches] == [
        (sorted(ids), {"key-1"})
    ]
    assert _journal(con) == 0  # what the journal said is now in the ledger


def test_a_dead_runs_sends_are_settled_by_what_the_journal_says(con) -> None:
    """Only a request handed over without an answer is in doubt; the rest is known."""
    keys = ["answered", "rejected", "in_flight", "never_sent"]
    write_eligibility(con, [cart_row(k) for k in keys])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="sendgrid")
    ids = {k: send_id("abandoned_cart", k, "reminder") for k in keys}
    hand_over(
        con,
        run_id="dead",
        trigger="abandoned_cart",
        send_ids=[ids["answered"], ids["rejected"]],
        key="req-1",
        answers=[
            SendResult(ids["answered"], "sent", provider_message_id="m-1"),
            SendResult(ids["rejected"], "failed", error="HTTP 400: bad address"),
        ],
    )
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=[ids["in_flight"]], key="r2")
    counts = _resume(con, AS_OF, provider="sendgrid")
    rows = ledger_rows(con)
    assert rows[ids["answered"]][0] == "sent"
    assert rows[ids["rejected"]] == ("failed_permanent", "HTTP 400: bad address", 1)
    assert rows[ids["in_flight"]][0] == "unknown"
    assert rows[ids["never_sent"]][0] == "planned"  # never left the dead run: sent now
    assert counts == {"sent": 1, "failed_permanent": 1, "unknown": 1, "planned": 1}
    (message_id,) = con.execute(
        "select provider_message_id from nudge.send_ledger where send_id = ?", [ids["answered"]]
    ).fetchall()[0]
    assert message_id == "m-1"
    assert _journal(con) == 0


def test_a_send_an_older_release_left_sending_is_unknown(con) -> None:
    # Before the journal, a whole batch was marked 'sending' before its requests went out.
    write_eligibility(con, [cart_row("a")])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="sendgrid")
    con.execute("update nudge.send_ledger set status = 'sending', batch_id = 'old-key'")
    assert _resume(con, AS_OF, provider="sendgrid") == {"unknown": 1}


def test_an_interrupted_idempotent_batch_with_one_ineligible_row_is_unknown(con) -> None:
    ids = _interrupted_batch(con, ["a", "b", "c"])
    write_eligibility(
        con,
        [cart_row("a"), cart_row("b"), cart_row("c", rule_exclusion_reason="unsubscribed")],
    )
    assert _resume(con, AS_OF, provider="resend", idempotent=True) == {"unknown": 3}
    assert {ledger_rows(con)[i][0] for i in ids} == {"unknown"}


def test_an_interrupted_batch_is_unknown_after_a_switch_of_provider(con) -> None:
    _interrupted_batch(con, ["a"], provider="resend")
    assert _resume(con, AS_OF, provider="outbox", idempotent=True) == {"unknown": 1}


def test_every_state_change_is_in_the_history(con) -> None:
    blip = _one_failed_retryable(con)
    write_eligibility(con, [cart_row("blip")])
    _resume(con, AS_OF + timedelta(hours=1))
    history = con.execute(
        "select status, reason, run_id from nudge.send_events where send_id = ? "
        "order by recorded_at, status",
        [blip],
    ).fetchall()
    assert history == [
        ("planned", None, "r1"),
        ("failed_retryable", "provider_unavailable", "r1"),
        ("planned", "provider_unavailable", "next"),
    ]


def test_resolve_unknown_resend_and_drop(con) -> None:
    ids = _interrupted_batch(con, ["a", "b"], provider="sendgrid")
    _resume(con, AS_OF, provider="sendgrid")
    assert [r[0] for r in ledger.unknown_sends(con)] == sorted(ids)
    assert ledger.resolve_unknown(con, action="drop", run_id="op", send_ids=[ids[0]]) == 1
    assert ledger.resolve_unknown(con, action="resend", run_id="op", trigger="abandoned_cart") == 1
    rows = ledger_rows(con)
    assert rows[ids[0]][0] == "skipped"
    assert rows[ids[1]][0] == "failed_retryable"
    assert ledger.unknown_sends(con) == []
    # The resend goes out on the next tick (no backoff wait), through the normal path.
    assert _resume(con, AS_OF + timedelta(minutes=1), provider="sendgrid", run_id="t2") == {
        "planned": 1
    }
    with pytest.raises(ValueError, match="resend or drop"):
        ledger.resolve_unknown(con, action="retry", run_id="op")


def test_duplicate_deliveries_counts_send_ids_settled_sent_twice(con) -> None:
    write_eligibility(con, [cart_row("a"), cart_row("b")])
    plan(con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="x")
    ids = [cart_row(k)["send_id"] for k in ("a", "b")]
    ledger.settle(con, run_id="r1", as_of=AS_OF, results=[SendResult(i, "sent") for i in ids])
    assert ledger.duplicate_deliveries(con, trigger="abandoned_cart") == 0
    # A regression that re-plans a sent row and sends it again shows up in the history.
    con.execute("update nudge.send_ledger set status = 'sending' where send_id = ?", [ids[0]])
    ledger.settle(con, run_id="r1", as_of=AS_OF, results=[SendResult(ids[0], "sent")])
    assert ledger.duplicate_deliveries(con, trigger="abandoned_cart") == 1


def test_the_key_window_counts_from_the_first_hand_over_not_the_latest_resend(con) -> None:
    # Run "dead" handed key-1 over 22 h ago and died; "next" resent it and died too. By the
    # time "third" runs, the key's first use is over a day old: the provider may have forgotten
    # it, so resending could deliver twice. Only the first use counts, not the resend.
    ids = _interrupted_batch(con, ["a", "b"])
    age_journal(con, 22)
    assert _resume(con, AS_OF, provider="resend", idempotent=True) == {"planned": 2}
    hand_over(con, run_id="next", trigger="abandoned_cart", send_ids=ids, key="key-1")
    # Two hours later (by the first use's clock):
    con.execute("update nudge.send_ledger set sending_at = sending_at - interval '2 hours'")
    assert _resume(con, AS_OF, provider="resend", idempotent=True, run_id="third") == {"unknown": 2}


def test_an_interrupted_idempotent_request_is_resent_even_at_night(con) -> None:
    # The request went out once already; it must go out again as it was, night or not (the
    # provider deduplicates), rather than become unknown.
    ids = _interrupted_batch(con, ["a", "b"])
    write_eligibility(con, [cart_row(k, rule_exclusion_reason="quiet_hours") for k in ("a", "b")])
    assert _resume(con, AS_OF, provider="resend", idempotent=True) == {"planned": 2}
    assert {
        r[3]
        for b in ledger.planned_batches(con, trigger="abandoned_cart", run_id="next", batch_size=10)
        for r in b
    } == {"key-1"}
    assert set(ids) == set(ledger_rows(con))


@pytest.mark.parametrize(("idempotent", "expected"), [(False, "unknown"), (True, "planned")])
def test_a_batch_refused_whole_and_split_leaves_only_the_half_on_the_wire_in_doubt(
    con, idempotent: bool, expected: str
) -> None:
    keys = ["a", "b", "c", "d"]
    write_eligibility(con, [cart_row(k) for k in keys])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="resend")
    ids = [send_id("abandoned_cart", k, "reminder") for k in keys]
    dying = HandoverJournal(journal_dir(con), run_id="dead", trigger="abandoned_cart")
    dying.handing_over(ids, "K")  # refused whole (400): nothing taken
    dying.returned(ids)
    dying.handing_over(ids[:2], "K-0")  # the first half went out; then the crash
    dying.close(discard=False)
    _resume(con, AS_OF, provider="resend", idempotent=idempotent)
    rows = ledger_rows(con)
    assert [rows[i][0] for i in ids] == [expected, expected, "planned", "planned"]
    batches = ledger.planned_batches(con, trigger="abandoned_cart", run_id="next", batch_size=10)
    keyed = {r[0]: r[3] for b in batches for r in b}
    assert keyed[ids[2]] is None and keyed[ids[3]] is None  # never out: a fresh batch
    if idempotent:
        assert keyed[ids[0]] == keyed[ids[1]] == "K-0"  # resent as that half, same key


def test_a_clock_stepped_back_mid_push_does_not_reorder_its_journal(con) -> None:
    # As above, but the wall clock stepped back an hour (NTP, a resumed VM) between the
    # refusal and the half that went out: read by time, the refusal would come last and the
    # half on the wire would look settled, and be sent again. The journal's own order counts.
    keys = ["a", "b", "c", "d"]
    write_eligibility(con, [cart_row(k) for k in keys])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="resend")
    ids = [send_id("abandoned_cart", k, "reminder") for k in keys]
    dying = HandoverJournal(journal_dir(con), run_id="dead", trigger="abandoned_cart")
    dying.handing_over(ids, "K")
    dying.returned(ids)
    dying.handing_over(ids[:2], "K-0")
    dying.close(discard=False)
    (path,) = journal_dir(con).glob("abandoned_cart.*")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        if line["request_key"] == "K-0":
            stepped_back = datetime.fromisoformat(line["recorded_at"]) - timedelta(hours=1)
            line["recorded_at"] = stepped_back.isoformat()
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    _resume(con, AS_OF, provider="resend", idempotent=False)
    rows = ledger_rows(con)
    assert [rows[i][0] for i in ids] == ["unknown", "unknown", "planned", "planned"]


def test_a_journal_line_cut_short_by_a_crash_is_ignored(con: duckdb.DuckDBPyConnection) -> None:
    # A write a crash cut short was never synced: its hand-over was never acknowledged, so its
    # request never went out. The lines before it still count.
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=["a"], key="k")
    (path,) = journal_dir(con).glob("abandoned_cart.*")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"run_id": "dead", "trigger": "abandoned_cart", "send_id": "b", "se')
    assert list(journal(con)["send_id"]) == ["a"]
