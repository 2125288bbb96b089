"""One trigger's push: exactly once across reruns, crashes, overlapping runs and bad rows."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.dispatch import dispatch_trigger
from dagster_project.policy import DispatchPolicy
from dagster_project.providers import HandoverError, OutboxProvider, ProviderLimits, SendResult
from dagster_project.providers.sendgrid import SendGridProvider
from dagster_project.rendering import Renderer, RenderError
from dagster_project.warehouse import connect, journal_dir, warehouse_lock
from tests.support.esp_server import EspServer
from tests.support.factories import (
    AS_OF,
    CART_SPEC,
    add_subscription,
    cart_row,
    dispatch,
    ledger_rows,
    write_eligibility,
)
from tests.support.ledger_steps import hand_over, journal, plan
from tests.support.mirrors import send_id
from tests.support.providers import RecordingProvider


@pytest.fixture
def con(engine_con):  # type: ignore[no-untyped-def]
    """Every push test with a ``con`` runs on DuckDB and on PostgreSQL."""
    return engine_con


def _dispatch(con, provider, *, as_of=AS_OF, run_id="run-1", batch_size=500, **policy):
    return dispatch(
        con,
        provider,
        as_of=as_of,
        run_id=run_id,
        policy=DispatchPolicy(batch_size=batch_size, **policy),
    )


def test_rerun_of_the_same_tick_sends_nothing(con, tmp_path: Path) -> None:
    write_eligibility(con, [cart_row(f"k{i}") for i in range(5)])
    outbox = OutboxProvider(tmp_path / "outbox")
    first = _dispatch(con, outbox)
    second = _dispatch(con, outbox, run_id="run-2")
    assert (first.new, first.sent, first.failed) == (5, 5, 0)
    assert (second.new, second.sent) == (0, 0)
    assert len(list((tmp_path / "outbox" / "abandoned_cart").glob("*.eml"))) == 5


def test_a_message_over_the_size_limit_is_not_sent_and_the_rest_are(con) -> None:
    # Hostile data (a 200 KB first name) makes a 400 KB email: Gmail would clip it, unsubscribe
    # link and all. It fails for good with its reason; the batch goes on.
    huge = cart_row("huge", first_name="A" * 200_000)
    write_eligibility(con, [cart_row("fine"), huge])
    provider = RecordingProvider()
    summary = _dispatch(con, provider, max_message_bytes=100_000)
    assert (summary.sent, summary.failed) == (1, 1)
    assert [m.customer_id for m in provider.sent] == ["cust_fine"]
    status, reason, error = con.execute(
        "select status, reason, error from nudge.send_ledger where send_id = ?", [huge["send_id"]]
    ).fetchall()[0]
    assert (status, reason) == ("failed_permanent", "message_too_large")
    assert "over the limit of 100000" in error
    assert all(m.size() <= 100_000 for m in provider.sent)


def test_a_row_that_fails_to_render_is_failed_and_the_rest_are_sent(con) -> None:
    # items = null breaks the cart template's loop: that row fails with the reason, others go.
    write_eligibility(con, [cart_row("good1"), cart_row("broken", items=None), cart_row("good2")])
    provider = RecordingProvider()
    summary = _dispatch(con, provider)
    assert (summary.sent, summary.failed) == (2, 1)
    broken = send_id("abandoned_cart", "broken", "reminder")
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
        "send_id": send_id("abandoned_cart", "a", "reminder"),
        "trigger": "abandoned_cart",
        "step": "reminder",
    }


def test_crash_mid_batch_then_rerun_never_resends_and_never_loses(con) -> None:
    # Batches of 2: the first batch is delivered and settled; the process dies during the
    # second, after its first message went out and was answered (the journal has the answer)
    # and before its second was handed over; the third batch was never pushed.
    write_eligibility(con, [cart_row(f"k{i}") for i in range(6)])
    dying = RecordingProvider(die_after=3)
    with pytest.raises(RuntimeError):
        _dispatch(con, dying, batch_size=2)
    statuses = sorted(s for s, _e, _a in ledger_rows(con).values())
    assert statuses == ["planned", "planned", "planned", "planned", "sent", "sent"]
    # The push's journal stays (it died): the settled batch is in it too, ignored from now on.
    settled = {sid for sid, (status, _e, _a) in ledger_rows(con).items() if status == "sent"}
    unsettled = journal(con).filter(~journal(con)["send_id"].is_in(list(settled)))
    assert sorted(unsettled["event"]) == ["answered", "handed_over"]
    assert set(unsettled["send_id"]) == {dying.sent[2].send_id}

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
                if statuses_by_id[send_id("abandoned_cart", f"k{i}", "reminder")] == "sent"
                else "in_flight",
            )
            for i in range(6)
        ],
    )
    survivor = RecordingProvider()
    summary = _dispatch(con, survivor, as_of=later, run_id="run-2")
    delivered_twice = {m.send_id for m in dying.sent} & {m.send_id for m in survivor.sent}
    assert delivered_twice == set()
    # The answered send is settled from the journal, the three never handed over are sent
    # now: nothing was in doubt, so nothing is unknown and nothing went out twice.
    assert len(survivor.sent) == 3
    assert summary.unknown == 0 and summary.resumed == 4
    final = sorted(s for s, _e, _a in ledger_rows(con).values())
    assert final == ["sent"] * 6
    assert _twice_sent(con) == 0


def _twice_sent(con) -> int:
    return ledger.duplicate_deliveries(con, trigger="abandoned_cart")


def test_a_retried_step_with_the_same_run_id_never_resends_what_its_first_attempt_sent(
    con,
) -> None:
    # Dagster retries a failed step inside the same run: same run id. The first attempt died
    # after three emails went out; the retry must take over its rows as a dead run's.
    write_eligibility(con, [cart_row(f"k{i}") for i in range(6)])
    dying = RecordingProvider(die_after=3)
    with pytest.raises(RuntimeError):
        _dispatch(con, dying, batch_size=2, run_id="run-1")
    retry = RecordingProvider()
    summary = _dispatch(con, retry, batch_size=2, run_id="run-1")
    assert {m.send_id for m in dying.sent} & {m.send_id for m in retry.sent} == set()
    assert len(retry.sent) == 3 and summary.unknown == 0
    assert sorted(s for s, _e, _a in ledger_rows(con).values()) == ["sent"] * 6
    assert _twice_sent(con) == 0


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


def test_an_interrupted_request_is_not_resent_once_one_of_its_recipients_said_no(
    con, tmp_path: Path
) -> None:
    # A request went out under key K and the run died; before the resend, one recipient
    # unsubscribed. Sending the rest under K would change the request (the provider would
    # refuse or replay), and the first attempt may have reached them all: nobody is mailed,
    # the request is unknown for an operator.
    write_eligibility(con, [cart_row("a"), cart_row("b")])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="outbox")
    ids = [cart_row(k)["send_id"] for k in ("a", "b")]
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=ids, key="K")
    add_subscription(con, "cust_b", "unsubscribed", AS_OF + timedelta(minutes=1))
    outbox = OutboxProvider(tmp_path / "outbox")
    summary = dispatch(con, outbox, run_id="next", consent_cutoff=AS_OF + timedelta(minutes=2))
    assert summary.sent == 0 and summary.unknown == 2
    assert {s for s, _e, _a in ledger_rows(con).values()} == {"unknown"}
    assert not (tmp_path / "outbox").exists()


def test_a_run_for_an_earlier_tick_leaves_a_later_dead_pushs_journal(con) -> None:
    # The 5-minute run for AS_OF handed a cart email over and died before the answer; the
    # hourly run for five minutes earlier got the lock after it (queued behind it). Resume
    # leaves the later tick's rows alone, so the journal that says the email may be out must
    # stay too: deleted, the next tick would see a planned row never handed over, and resend it.
    earlier = AS_OF - timedelta(minutes=5)
    in_doubt = send_id("abandoned_cart", "a", "reminder")
    write_eligibility(con, [cart_row("a")])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="recording")
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=[in_doubt], as_of=AS_OF)

    write_eligibility(con, [cart_row("b", as_of=earlier)])
    hourly = RecordingProvider()
    dispatch(con, hourly, as_of=earlier, run_id="hourly")
    assert [m.send_id for m in hourly.sent] == [send_id("abandoned_cart", "b", "reminder")]
    assert journal(con)["send_id"].to_list() == [in_doubt]

    # The next tick at or after the dead push's settles it from the journal: it may be out.
    write_eligibility(con, [cart_row("a")])
    following = RecordingProvider()
    summary = dispatch(con, following, run_id="next")
    assert following.sent == [] and summary.unknown == 1
    assert ledger_rows(con)[in_doubt][0] == "unknown"
    assert journal(con).is_empty()


class _InterruptedMidRequest(RecordingProvider):
    """Hands its first message over and, while that request is on the wire, lets the push be
    interrupted (``on_wire``); its answer comes back after. The rest of the batch goes on as
    the HTTP adapters do: a hand-over the journal refuses is a request that does not go out."""

    def __init__(self) -> None:
        super().__init__()
        self.on_wire = threading.Event()

    def send(self, messages, *, idempotency_key=None, journal=None):  # type: ignore[no-untyped-def]
        assert journal is not None
        results = []
        for index, message in enumerate(messages):
            try:
                journal.handing_over([message.send_id], idempotency_key)
            except HandoverError as exc:
                results.append(
                    SendResult(message.send_id, "failed", error=str(exc), retryable=True)
                )
                continue
            self.sent.append(message)
            if index == 0:
                self.on_wire.set()
                deadline = time.monotonic() + 30
                while journal.accepting_handovers and time.monotonic() < deadline:
                    time.sleep(0.01)
            result = SendResult(message.send_id, "sent", provider_message_id=f"m-{message.send_id}")
            with contextlib.suppress(HandoverError):  # logged by the adapters; results returned
                journal.answered([result])
            results.append(result)
        return results


def test_an_interrupted_push_still_journals_the_answers_of_requests_on_the_wire(
    con, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C (or Dagster's termination) lands while the push waits for a request on the wire:
    # nothing more goes out, and that request's answer, read after the interrupt, still
    # reaches the journal. The next run settles it as sent, rather than leave an email whose
    # outcome was known in doubt ('unknown'). (With polars imported, a real SIGINT is only
    # raised once the wait is over, so the interrupt is raised in the wait here.)
    write_eligibility(con, [cart_row(f"k{i}") for i in range(3)])
    interrupted = _InterruptedMidRequest()

    def interrupted_wait(future, timeout=None):  # type: ignore[no-untyped-def]
        interrupted.on_wire.wait(10)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(Future, "result", interrupted_wait)
        dispatch(con, interrupted, run_id="interrupted")
    (first,) = interrupted.sent

    following = RecordingProvider()
    summary = dispatch(con, following, run_id="next")
    rows = ledger_rows(con)
    assert rows[first.send_id][0] == "sent" and summary.unknown == 0
    assert sorted(m.send_id for m in following.sent) == sorted(set(rows) - {first.send_id})
    assert {status for status, _e, _a in rows.values()} == {"sent"}


def test_a_resend_that_no_longer_renders_as_before_is_unknown_whole(con) -> None:
    # A request through an idempotent provider was on the wire when its push died. Resent
    # under its key it must be the same request; if one of its emails no longer renders (a
    # lower size limit, a changed template) it cannot go out as it was, and its first attempt
    # may have been delivered: nobody is mailed and the whole request is unknown (resolved by
    # an operator), not one email "failed" and the rest sent under the key with a new body.
    write_eligibility(con, [cart_row("a"), cart_row("b", first_name="B" * 20000)])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="recording")
    ids = sorted(ledger_rows(con))
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=ids, key="K", as_of=AS_OF)
    provider = RecordingProvider()
    provider.limits = ProviderLimits(max_batch=1000, idempotent=True)
    summary = dispatch(con, provider, run_id="next", policy=DispatchPolicy(max_message_bytes=20000))
    assert provider.sent == [] and summary.unknown == 2
    assert {status for status, _e, _a in ledger_rows(con).values()} == {"unknown"}


def test_a_failing_journal_stops_the_push_but_loses_no_answer(
    con, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The journal's writer fails (disk full, say) after a few commits: no request goes out
    # that it could not record, and the answers already in hand are still settled.
    from dagster_project.handover import HandoverJournal

    real_write = HandoverJournal._write
    calls = {"n": 0}

    def failing_write(self, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError("no space left on device")
        real_write(self, rows)

    monkeypatch.setattr(HandoverJournal, "_write", failing_write)
    write_eligibility(con, [cart_row(f"k{i}") for i in range(6)])
    with EspServer(api_key="SG.k") as server:
        provider = SendGridProvider("SG.k", server.url, max_concurrency=1, max_attempts=1)
        with pytest.raises(Exception, match="no space left"):
            _dispatch(con, provider)
        provider.close()
        received = set(server.received_send_ids())
    rows = ledger_rows(con)
    sent = {sid for sid, (status, _e, _a) in rows.items() if status == "sent"}
    assert received and sent == received  # every delivered email is recorded as sent
    assert {status for status, _e, _a in rows.values()} <= {"sent", "failed_retryable"}


class _CountingRenderer(Renderer):
    """Says when it starts on the ``nth`` email of the push."""

    def __init__(self, nth: int) -> None:
        super().__init__()
        self.rendered = 0
        self.reached = threading.Event()
        self.nth = nth

    def render(self, template, context):  # type: ignore[no-untyped-def]
        self.rendered += 1
        if self.rendered >= self.nth:
            self.reached.set()
        return super().render(template, context)


class _WaitingProvider(RecordingProvider):
    """Holds its first request until ``during_first`` returns, as a slow provider would."""

    def __init__(self, during_first) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.during_first = during_first
        self.calls = 0
        self.first_saw: object = None

    def send(self, messages, *, idempotency_key=None, journal=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            self.first_saw = self.during_first()
        return super().send(messages, idempotency_key=idempotency_key, journal=journal)


def test_the_next_batch_is_rendered_while_the_current_one_is_on_the_wire(con) -> None:
    write_eligibility(con, [cart_row(f"k{i}") for i in range(6)])
    renderer = _CountingRenderer(nth=4)  # the first email of the second batch of three
    provider = _WaitingProvider(lambda: renderer.reached.wait(10))
    summary = dispatch(
        con, provider, renderer=renderer, policy=DispatchPolicy(batch_size=3), run_id="r"
    )
    # Rendering waited for the first request's answer before: the wait timed out.
    assert provider.first_saw is True
    assert summary.sent == 6 and provider.calls == 2
    assert sorted(m.send_id for m in provider.sent) == sorted(
        send_id for (send_id,) in con.execute("select send_id from nudge.send_ledger").fetchall()
    )


def test_an_opt_out_while_a_batch_is_on_the_wire_stops_the_next_one_rendered_ahead(
    con,
) -> None:
    write_eligibility(con, [cart_row(f"k{i}") for i in range(6)])
    other = con.cursor()  # the service's own connection, say
    renderer = _CountingRenderer(nth=4)

    def unsubscribe_k4() -> bool:
        # The second batch is rendered ahead by now; then k4 says no.
        rendered = renderer.reached.wait(10)
        add_subscription(other, "cust_k4", "unsubscribed", AS_OF + timedelta(minutes=10))
        return rendered

    provider = _WaitingProvider(unsubscribe_k4)
    summary = dispatch(
        con,
        provider,
        renderer=renderer,
        policy=DispatchPolicy(batch_size=3),
        consent_cutoff=AS_OF + timedelta(hours=1),
    )
    assert provider.first_saw is True
    rows = dict(
        con.execute(
            "select customer_id, status || ':' || coalesce(reason, '') from nudge.send_ledger"
        ).fetchall()
    )
    assert rows.pop("cust_k4") == "skipped:unsubscribed_before_send"
    assert set(rows.values()) == {"sent:"}
    assert "cust_k4" not in {m.customer_id for m in provider.sent}
    assert summary.sent == 5 and summary.skipped == 1


class _Stop(BaseException):
    """What Dagster raises in the step's main thread when a run is terminated."""


def test_a_push_told_to_stop_mid_batch_sends_nothing_more_and_loses_nothing(con) -> None:
    import os
    import signal
    import time

    write_eligibility(con, [cart_row(f"k{i}") for i in range(6)])

    def stop(signum, frame):  # type: ignore[no-untyped-def]
        raise _Stop

    class StoppedMidBatch(RecordingProvider):
        def send(self, messages, *, idempotency_key=None, journal=None):  # type: ignore[no-untyped-def]
            first = super().send(messages[:1], idempotency_key=idempotency_key, journal=journal)
            time.sleep(0.3)  # the push is waiting for this batch by now (the next is tiny)
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.3)
            rest = super().send(messages[1:], idempotency_key=idempotency_key, journal=journal)
            return first + rest

    previous = signal.signal(signal.SIGUSR1, stop)
    try:
        stopped = StoppedMidBatch()
        with pytest.raises(_Stop):
            _dispatch(con, stopped, batch_size=3)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # The journal closed when the stop came: the batch's next hand-over failed, nothing more
    # went out (before, the whole batch went out after the stop).
    assert len(stopped.sent) == 1
    rerun = RecordingProvider()
    summary = _dispatch(con, rerun, batch_size=3, run_id="run-2")
    sent = [m.send_id for m in stopped.sent + rerun.sent]
    assert len(sent) == len(set(sent)) == 6
    assert summary.sent == 5 and summary.resumed == 6
    statuses = con.execute("select distinct status from nudge.send_ledger").fetchall()
    assert statuses == [("sent",)]


@pytest.mark.parametrize(("batch_size", "settles"), [(None, 2), (250, 5)])
def test_a_batch_api_gets_a_full_request_per_worker_unless_told_otherwise(
    con, batch_size: int | None, settles: int
) -> None:
    # Postmark takes 500 per request; with 2 workers one hand-over is 1,000 sends: one consent
    # re-check and one settle for two concurrent requests, not one per 100 as for one-message
    # APIs. An operator's batch_size still wins.
    from dagster_project.providers.postmark import PostmarkProvider

    write_eligibility(con, [cart_row(f"k{i:04d}") for i in range(1200)])
    with EspServer(api_key="pm-token") as server:
        provider = PostmarkProvider("pm-token", server.url, max_concurrency=2)
        summary = dispatch(
            con, provider, as_of=AS_OF, run_id="r1", policy=DispatchPolicy(batch_size=batch_size)
        )
        provider.close()
        sizes = sorted(len(r.send_ids) for r in server.requests)
    assert summary.sent == 1200
    batches = con.execute(
        "select count(distinct batch_id) from nudge.send_ledger where status = 'sent'"
    ).fetchone()
    assert batches == (settles,)
    assert sizes == ([200, 500, 500] if batch_size is None else [200] + [250] * 4)


def test_a_settle_that_fails_while_the_next_batch_is_out_stops_the_push_and_loses_nothing(
    con, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batch 1 settles while batch 2 is on the wire. If that settle fails (a full disk, a bug),
    # batch 2 still finishes and is journaled, nothing more goes out, and the next run settles
    # both from the journal: every send once, none lost.
    write_eligibility(con, [cart_row(f"k{i}") for i in range(9)])
    real_settle = ledger.settle_batches
    calls = {"with_results": 0}

    def failing_settle(con, *, batches, **kwargs):  # type: ignore[no-untyped-def]
        if any(results for results, _key, _at in batches):
            calls["with_results"] += 1
            if calls["with_results"] == 1:
                raise duckdb.IOException("disk full")
        return real_settle(con, batches=batches, **kwargs)

    monkeypatch.setattr(ledger, "settle_batches", failing_settle)
    provider = RecordingProvider()
    with pytest.raises(duckdb.IOException, match="disk full"):
        _dispatch(con, provider, batch_size=3, settle_every=3)
    monkeypatch.setattr(ledger, "settle_batches", real_settle)
    # Batch 1 went out, then batch 2 while batch 1's settle failed; batch 3 never did.
    assert len(provider.sent) == 6
    assert len(journal(con)) > 0
    # Leaving, the push tried to settle again what it had: the ledger already has both.
    statuses = {status for status, _e, _a in ledger_rows(con).values()}
    assert statuses == {"sent", "planned"}

    rerun = RecordingProvider()
    summary = _dispatch(con, rerun, batch_size=3, run_id="run-2")
    assert len(rerun.sent) == 3  # batch 3 only
    assert {status for status, _e, _a in ledger_rows(con).values()} == {"sent"}
    assert summary.duplicate_deliveries == 0
    assert journal(con).is_empty()


def test_answered_batches_are_settled_together_each_row_under_its_own_batch(
    con, monkeypatch: pytest.MonkeyPatch
) -> None:
    # settle_every=6 with batches of 3: batches 1 and 2 are settled in one transaction while
    # batch 3 is on the wire, batch 3 at the end. Merged, each row still records the request
    # key of its own batch and when that batch was handed over.
    write_eligibility(con, [cart_row(f"k{i}") for i in range(9)])
    real_settle = ledger.settle_batches
    settles: list[list[int]] = []

    def counting_settle(con, *, batches, **kwargs):  # type: ignore[no-untyped-def]
        if any(results for results, _key, _at in batches):  # not a batch's render failures
            settles.append([len(results) for results, _key, _at in batches])
        return real_settle(con, batches=batches, **kwargs)

    monkeypatch.setattr(ledger, "settle_batches", counting_settle)
    provider = RecordingProvider()
    summary = _dispatch(con, provider, batch_size=3, settle_every=6)
    assert summary.sent == 9
    assert settles == [[3, 3], [3]]
    rows = con.execute(
        "select batch_id, count(*), count(distinct sending_at), min(status), max(status)"
        " from nudge.send_ledger group by batch_id"
    ).fetchall()
    assert sorted(n for _, n, _, _, _ in rows) == [3, 3, 3]
    assert all(instants == 1 and low == high == "sent" for _, _, instants, low, high in rows)
    assert {batch for batch, *_ in rows} == {
        ledger.batch_key([m.send_id for m in provider.sent[i : i + 3]]) for i in (0, 3, 6)
    }


def test_a_journal_file_left_after_its_batch_settled_is_cleared_by_a_step_with_nothing_due(
    con,
) -> None:
    # A push died after its last settle committed and before it deleted its journal file. The
    # next tick's step looks idle (no unfinished row, nothing due), but only resume clears
    # that file: the idle fast path must not skip it, or the file outlives every tick.
    rows = [cart_row(f"k{i}") for i in range(3)]
    write_eligibility(con, rows)
    provider = RecordingProvider()
    assert _dispatch(con, provider).sent == 3
    hand_over(
        con,
        run_id="run-1",
        trigger="abandoned_cart",
        send_ids=[row["send_id"] for row in rows],
        answers=[SendResult(row["send_id"], "sent", provider_message_id="m") for row in rows],
    )
    assert len(journal(con)) > 0
    # The next tick's table: all three already sent, nothing due.
    write_eligibility(
        con,
        [cart_row(f"k{i}", is_eligible=False, exclusion_reason="already_sent") for i in range(3)],
    )
    assert ledger.is_idle(
        con, trigger="abandoned_cart", eligibility=CART_SPEC.relation, as_of=AS_OF
    )
    again = _dispatch(con, provider, run_id="run-2")
    assert (again.sent, again.resumed, len(provider.sent)) == (0, 0, 3)
    assert len(journal(con)) == 0
    assert not list(journal_dir(con).glob("*.jsonl"))
