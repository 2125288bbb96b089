"""The ledger's claims and state changes, on a real DuckDB file."""

from __future__ import annotations

from datetime import timedelta

import duckdb

from dagster_project import ledger
from dagster_project.providers import SendResult
from tests.factories import AS_OF, CART_SPEC, cart_row, ledger_rows, write_eligibility


def test_send_id_is_deterministic_and_distinguishes_steps() -> None:
    assert ledger.send_id("t", "k", "s") == ledger.send_id("t", "k", "s")
    assert ledger.send_id("t", "k", "s1") != ledger.send_id("t", "k", "s2")
    # Same as the dbt macro: md5 of trigger|trigger_key|step.
    assert ledger.send_id("abandoned_cart", "k_sent", "reminder") == (
        "b8e8b0dd1757de1afd83a1f6983c727d"
    )


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
    planned = ledger.plan(
        con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="outbox"
    )
    assert planned == 1
    assert ledger_rows(con) == {
        ledger.send_id("abandoned_cart", "due", "reminder"): ("planned", None, 0)
    }


def test_plan_twice_claims_each_send_once(con: duckdb.DuckDBPyConnection) -> None:
    write_eligibility(con, [cart_row("a"), cart_row("b")])
    first = ledger.plan(con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="x")
    second = ledger.plan(
        con, eligibility=CART_SPEC.relation, run_id="r2", as_of=AS_OF, provider="x"
    )
    assert (first, second) == (2, 0)
    owners = {r[0] for r in con.execute("select run_id from nudge.send_ledger").fetchall()}
    assert owners == {"r1"}


def test_claim_and_settle_record_results(con: duckdb.DuckDBPyConnection) -> None:
    write_eligibility(con, [cart_row("a"), cart_row("b")])
    ledger.plan(con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="x")
    ids = [ledger.send_id("abandoned_cart", k, "reminder") for k in ("a", "b")]
    assert ledger.claim_batch(con, run_id="r1", send_ids=ids) == set(ids)
    # A second claim of the same rows finds nothing planned: they are already sending.
    assert ledger.claim_batch(con, run_id="r1", send_ids=ids) == set()
    ledger.settle(
        con,
        run_id="r1",
        results=[
            SendResult(ids[0], "sent", provider_message_id="m-1"),
            SendResult(ids[1], "failed", error="400: invalid address", attempts=1),
        ],
    )
    rows = ledger_rows(con)
    assert rows[ids[0]] == ("sent", None, 1)
    assert rows[ids[1]] == ("failed", "400: invalid address", 1)
    assert ledger.status_counts(con, trigger="abandoned_cart", run_id="r1") == {
        "sent": 1,
        "failed": 1,
    }


def _leave_dead_run(con: duckdb.DuckDBPyConnection) -> tuple[str, str, str]:
    """A run 'dead' planned 3 sends, handed one to the ESP, and one expired meanwhile."""
    write_eligibility(
        con,
        [
            cart_row("planned"),
            cart_row("sending"),
            cart_row("late", expires_at=AS_OF + timedelta(minutes=30)),
        ],
    )
    ledger.plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="x")
    ids = tuple(
        ledger.send_id("abandoned_cart", k, "reminder") for k in ("planned", "sending", "late")
    )
    ledger.claim_batch(con, run_id="dead", send_ids=[ids[1]])
    return ids  # type: ignore[return-value]


def test_recover_resends_never_sent_rows_and_marks_in_flight_unknown(con) -> None:
    planned, sending, late = _leave_dead_run(con)
    later = AS_OF + timedelta(hours=1)
    ledger.recover(con, trigger="abandoned_cart", run_id="next", as_of=later, idempotent=False)
    rows = ledger_rows(con)
    assert rows[planned][0] == "planned"  # never reached the ESP: safe to send
    assert rows[sending][0] == "unknown"  # may have been delivered: not resent
    assert "delivery unknown" in rows[sending][1]
    assert rows[late][0] == "expired"


def test_recover_resends_in_flight_rows_through_an_idempotent_provider(con) -> None:
    planned, sending, _late = _leave_dead_run(con)
    ledger.recover(con, trigger="abandoned_cart", run_id="next", as_of=AS_OF, idempotent=True)
    rows = ledger_rows(con)
    assert rows[planned][0] == "planned" and rows[sending][0] == "planned"
    owners = {r[0] for r in con.execute("select distinct run_id from nudge.send_ledger").fetchall()}
    assert owners == {"next"}
