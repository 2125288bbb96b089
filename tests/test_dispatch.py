"""One trigger's push: exactly once across reruns, crashes, overlapping runs and bad rows."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.dispatch import DispatchPolicy, dispatch_trigger
from dagster_project.providers import (
    Message,
    OutboxProvider,
    ProviderLimits,
    SendGridProvider,
    SendResult,
)
from dagster_project.rendering import Renderer, RenderError
from dagster_project.warehouse import connect, warehouse_lock
from tests.esp_server import EspServer
from tests.factories import AS_OF, CART_SPEC, cart_row, ledger_rows, write_eligibility
from tests.support.providers import RecordingProvider


def _dispatch(con, provider, *, as_of=AS_OF, run_id="run-1", batch_size=500):
    return dispatch_trigger(
        con,
        CART_SPEC,
        provider=provider,
        renderer=Renderer(),
        as_of=as_of,
        run_id=run_id,
        from_email="shop@example.com",
        policy=DispatchPolicy(batch_size=batch_size),
    )


def test_rerun_of_the_same_tick_sends_nothing(con, tmp_path: Path) -> None:
    write_eligibility(con, [cart_row(f"k{i}") for i in range(5)])
    outbox = OutboxProvider(tmp_path / "outbox")
    first = _dispatch(con, outbox)
    second = _dispatch(con, outbox, run_id="run-2")
    assert (first.new, first.sent, first.failed) == (5, 5, 0)
    assert (second.new, second.sent) == (0, 0)
    assert len(list((tmp_path / "outbox" / "abandoned_cart").glob("*.eml"))) == 5


def test_a_row_that_fails_to_render_is_failed_and_the_rest_are_sent(con) -> None:
    # items = null breaks the cart template's loop: that row fails with the reason, others go.
    write_eligibility(con, [cart_row("good1"), cart_row("broken", items=None), cart_row("good2")])
    provider = RecordingProvider()
    summary = _dispatch(con, provider)
    assert (summary.sent, summary.failed) == (2, 1)
    broken = ledger.send_id("abandoned_cart", "broken", "reminder")
    status, error, attempts = ledger_rows(con)[broken]
    assert status == "failed_permanent" and attempts == 0
    assert "reminder.html.j2" in error or "reminder.subject.j2" in error
    assert sorted(m.customer_id for m in provider.sent) == ["cust_good1", "cust_good2"]


def test_customer_data_is_escaped_not_executed(con) -> None:
    write_eligibility(con, [cart_row("x", first_name="<script>{{ 7*7 }}</script>")])
    provider = RecordingProvider()
    _dispatch(con, provider)
    (message,) = provider.sent
    assert "&lt;script&gt;{{ 7*7 }}&lt;/script&gt;" in message.html
    assert "49" not in message.subject


def test_custom_args_join_provider_events_back_to_the_ledger(con) -> None:
    write_eligibility(con, [cart_row("a")])
    provider = RecordingProvider()
    _dispatch(con, provider)
    (message,) = provider.sent
    assert message.custom_args == {
        "send_id": ledger.send_id("abandoned_cart", "a", "reminder"),
        "trigger": "abandoned_cart",
        "step": "reminder",
    }


def test_crash_mid_batch_then_rerun_never_resends_and_never_loses(con) -> None:
    # Batches of 2: the first batch is delivered and settled, the process dies during the
    # second, the third was never claimed.
    write_eligibility(con, [cart_row(f"k{i}") for i in range(6)])
    dying = RecordingProvider(die_after=3)
    with pytest.raises(RuntimeError):
        _dispatch(con, dying, batch_size=2)
    statuses = sorted(s for s, _e, _a in ledger_rows(con).values())
    assert statuses == ["planned", "planned", "sending", "sending", "sent", "sent"]

    # The next tick's dbt build sees those send_ids in the ledger and excludes them.
    later = AS_OF + timedelta(hours=1)
    statuses_by_id = {k: v[0] for k, v in ledger_rows(con).items()}
    write_eligibility(
        con,
        [
            cart_row(
                f"k{i}",
                as_of=later,
                is_eligible=False,
                exclusion_reason="already_sent"
                if statuses_by_id[ledger.send_id("abandoned_cart", f"k{i}", "reminder")] == "sent"
                else "in_flight",
            )
            for i in range(6)
        ],
    )
    survivor = RecordingProvider()
    summary = _dispatch(con, survivor, as_of=later, run_id="run-2")
    delivered_twice = {m.send_id for m in dying.sent} & {m.send_id for m in survivor.sent}
    assert delivered_twice == set()
    # The never-claimed batch is sent; the in-flight batch is 'unknown' (non-idempotent ESP).
    assert summary.sent == 2 and summary.unknown == 2
    final = sorted(s for s, _e, _a in ledger_rows(con).values())
    assert final == ["sent", "sent", "sent", "sent", "unknown", "unknown"]


def test_stale_eligibility_table_is_not_sent_under_another_as_of(con) -> None:
    write_eligibility(con, [cart_row("a", as_of=AS_OF)])
    summary = _dispatch(con, RecordingProvider(), as_of=AS_OF + timedelta(hours=1))
    assert summary.skipped_reason and "was built for as_of" in summary.skipped_reason
    assert ledger_rows(con) == {}


def test_missing_template_fails_before_anything_is_planned(con, tmp_path: Path) -> None:
    write_eligibility(con, [cart_row("a")])
    with pytest.raises(RenderError, match="missing"):
        dispatch_trigger(
            con,
            CART_SPEC,
            provider=RecordingProvider(),
            renderer=Renderer(tmp_path),
            as_of=AS_OF,
            run_id="r",
            from_email="shop@example.com",
        )
    assert ledger_rows(con) == {}


def test_overlapping_runs_on_one_warehouse_send_each_email_once(warehouse: Path) -> None:
    setup = connect(warehouse)
    ledger.ensure_ledger(setup)
    write_eligibility(setup, [cart_row(f"k{i}") for i in range(40)])
    setup.close()
    errors: list[BaseException] = []

    with EspServer() as server:
        server.set_default({"delay": 0.005})

        def run(run_id: str) -> None:
            provider = SendGridProvider(
                "SG.test", server.url, timeout=5, max_concurrency=4, max_attempts=3
            )
            try:
                with warehouse_lock(warehouse, timeout=60):
                    con: duckdb.DuckDBPyConnection = connect(warehouse)
                    try:
                        _dispatch(con, provider, run_id=run_id, batch_size=10)
                    finally:
                        con.close()
            except BaseException as exc:  # surfaced below
                errors.append(exc)
            finally:
                provider.close()

        threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        received = server.received_send_ids()

    assert errors == []
    assert len(received) == 40 and len(set(received)) == 40
    con = connect(warehouse)
    assert con.execute(
        "select count(*) from nudge.send_ledger where status = 'sent'"
    ).fetchone() == (40,)
    con.close()
