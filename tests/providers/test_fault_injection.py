"""Thousands of sends through each HTTP provider while the server misbehaves at random.

The local server answers a share of requests with 429 (with and without ``Retry-After``), 500,
503, slow answers, answers after the client gave up, dropped connections (with and without the
message having been accepted) and per-message rejections. For every tick the test checks:

* every due send ends in exactly one settled state, and
  ``new + resumed = sent + failed + unknown + skipped + expired`` (nothing ``held`` here);
* the server accepted each ``send_id`` at most once, exactly once where the provider honours
  idempotency keys; what the ledger calls ``sent`` was accepted, and what was accepted is
  ``sent`` or, for providers without keys, ``unknown``;
* a second tick after the faults stop delivers everything retryable.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from dagster_project import ledger
from dagster_project.policy import DispatchPolicy
from dagster_project.providers import Provider
from dagster_project.providers.postmark import PostmarkProvider
from dagster_project.providers.resend import ResendProvider
from dagster_project.providers.sendgrid import SendGridProvider
from dagster_project.providers.webhook import WebhookProvider
from dagster_project.runs import TriggerSummary
from dagster_project.warehouse import connect
from tests.support.esp_server import EspServer
from tests.support.factories import AS_OF, cart_row, dispatch, write_eligibility

KEY = "test-key-0123456789"
SECRET = "whsec-0123456789abcdef"
FAST = {"timeout": 0.3, "max_concurrency": 8, "max_attempts": 3}
SEED = int(os.environ.get("NUDGE_FAULT_SEED", "20261123"))

ProviderFactory = Callable[[EspServer], Provider]
PROVIDERS: dict[str, tuple[int, ProviderFactory]] = {
    "sendgrid": (600, lambda s: SendGridProvider(KEY, s.url, backoff_base=0.01, **FAST)),
    "postmark": (1500, lambda s: PostmarkProvider(KEY, s.url, backoff_base=0.01, **FAST)),
    "resend": (
        1000,
        lambda s: ResendProvider(KEY, s.url, requests_per_second=1000, backoff_base=0.01, **FAST),
    ),
    "webhook": (
        1000,
        lambda s: WebhookProvider(s.webhook_url, SECRET, backoff_base=0.01, **FAST),
    ),
}


def _tick(con, provider: Provider, *, as_of, run_id: str) -> TriggerSummary:
    try:
        # Batches of 25: many requests, so many faults.
        return dispatch(
            con, provider, as_of=as_of, run_id=run_id, policy=DispatchPolicy(batch_size=25)
        )
    finally:
        provider.close()


def _statuses(con) -> dict[str, str]:
    return dict(con.execute("select send_id, status from nudge.send_ledger").fetchall())


def _check_tick(
    summary: TriggerSummary, statuses: dict[str, str], server: EspServer, *, idempotent: bool
) -> None:
    settled = summary.sent + summary.failed + summary.unknown + summary.skipped + summary.expired
    assert summary.new + summary.resumed == settled
    assert not {"planned", "sending"} & set(statuses.values())
    assert server.duplicate_deliveries() == {}, "a send_id was delivered twice"
    sent = {s for s, st in statuses.items() if st == "sent"}
    unknown = {s for s, st in statuses.items() if st == "unknown"}
    accepted = server.accepted_send_ids()
    assert sent <= accepted, "marked sent but never accepted"
    if idempotent:
        assert accepted == sent, "an idempotent provider must end exactly once"
        assert not unknown
    else:
        assert accepted <= sent | unknown, "accepted but the ledger says not delivered"


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_random_faults_never_lose_or_duplicate_a_send(tmp_path: Path, name: str) -> None:
    count, build = PROVIDERS[name]
    con = connect(tmp_path / "warehouse.duckdb")
    ledger.ensure_ledger(con)
    rows = [cart_row(f"k{i:05d}") for i in range(count)]
    write_eligibility(con, rows)
    due = {r["send_id"] for r in rows}
    with EspServer(api_key=KEY, webhook_secret=SECRET, validate=[name]) as server:
        server.random_faults(0.3, seed=SEED, retry_after="0.01", slow_delay=0.02, timeout_delay=0.5)
        first = _tick(con, build(server), as_of=AS_OF, run_id="faulty")
        statuses = _statuses(con)
        assert set(statuses) == due
        idempotent = build(server).limits.idempotent
        _check_tick(first, statuses, server, idempotent=idempotent)
        # The faults did bite: requests failed, and were retried or left to a later tick.
        faulted = [r for r in server.send_requests() if r.status >= 400 or r.status == 0]
        assert len(faulted) >= 3, len(faulted)
        if not idempotent:
            assert Counter(statuses.values())["unknown"] > 0  # dropped answers: in doubt
        assert server.schema_violations == []

        # The faults stop; a tick past the retry backoff delivers everything retryable.
        server.random_faults(0)
        retryable = {s for s, st in statuses.items() if st == "failed_retryable"}
        later = AS_OF + timedelta(minutes=20)
        # The next tick's dbt build: every row is in the ledger now, so none is newly eligible,
        # and the rules still allow all of them (the retryable ones are resumed).
        write_eligibility(
            con,
            [
                cart_row(f"k{i:05d}", as_of=later, is_eligible=False, exclusion_reason="in_ledger")
                for i in range(count)
            ],
        )
        second = _tick(con, build(server), as_of=later, run_id="calm")
        after = _statuses(con)
        _check_tick(second, after, server, idempotent=idempotent)
        assert second.resumed == len(retryable)
        assert all(after[s] == "sent" for s in retryable), Counter(after[s] for s in retryable)
        assert "failed_retryable" not in after.values()
        # Whatever is not sent is a known, explained set: rejected rows and unknowns.
        assert set(after.values()) <= {"sent", "failed_permanent", "unknown"}
        errors = con.execute(
            "select count(*) from nudge.send_ledger where status = 'failed_permanent' "
            "and (error is null or reason is null)"
        ).fetchone()
        assert errors == (0,)
    con.close()
