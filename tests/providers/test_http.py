"""The shared HTTP machinery (providers/http.py), through real adapters and a real server."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from dagster_project.providers.base import ProviderConfigError, SendResult
from dagster_project.providers.http import HttpJsonProvider
from dagster_project.providers.postmark import PostmarkProvider
from dagster_project.providers.resend import ResendProvider
from dagster_project.providers.sendgrid import SendGridProvider
from dagster_project.providers.webhook import WebhookProvider
from dagster_project.providers.wire import (
    parse_rate_limit_reset,
    parse_retry_after,
    rate_limit_wait,
    window_spent,
)
from tests.support.esp_server import EspServer, Reply
from tests.support.factories import SleepRecorder, make_message

KEY = "unit-test-secret-0123456789abcdef"
SECRET = "whsec-unit-test-0123456789abcdef"


@pytest.fixture
def server(start_esp: Callable[..., EspServer]) -> EspServer:
    return start_esp(api_key=KEY, webhook_secret=SECRET)


def webhook(server: EspServer, **kwargs: Any) -> WebhookProvider:
    kwargs.setdefault("timeout", 2.0)
    return WebhookProvider(server.webhook_url, SECRET, **kwargs)


# -- header parsing ------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk, now=now) is None


def test_parse_rate_limit_reset_reads_seconds_or_timestamps() -> None:
    now = 1_750_000_000.0
    assert parse_rate_limit_reset("3", now=now) == 3.0  # Resend: seconds to wait
    assert parse_rate_limit_reset("1750000042", now=now) == 42.0  # SendGrid: Unix time
    assert parse_rate_limit_reset("1750000042000", now=now) == 42.0  # milliseconds
    assert parse_rate_limit_reset("1749999000", now=now) == 0.0  # already reset
    for junk in (None, " ", "later", "nan"):
        assert parse_rate_limit_reset(junk, now=now) is None


def test_rate_limit_wait_prefers_retry_after_then_reset_headers() -> None:
    assert rate_limit_wait(httpx.Headers({"Retry-After": "2", "RateLimit-Reset": "9"})) == 2.0
    assert rate_limit_wait(httpx.Headers({"ratelimit-reset": "9"})) == 9.0
    assert rate_limit_wait(httpx.Headers({"X-RateLimit-Reset": "4"})) == 4.0
    assert rate_limit_wait(httpx.Headers({})) is None
    assert window_spent(httpx.Headers({"X-RateLimit-Remaining": "0"}))
    assert window_spent(httpx.Headers({"ratelimit-remaining": "0"}))
    assert not window_spent(httpx.Headers({"X-RateLimit-Remaining": "3"}))


# -- planning ------------------------------------------------------------------------------


def test_requests_are_cut_the_same_way_whatever_the_input_order(server: EspServer) -> None:
    with webhook(server, batch_size=3) as p:
        p.send([make_message(n) for n in range(1, 8)], idempotency_key="k")
        first = {r.idempotency_key: r.raw for r in server.send_requests()}
        server.reset()
        p.send([make_message(n) for n in (7, 3, 5, 1, 2, 6, 4)], idempotency_key="k")
        second = {r.idempotency_key: r.raw for r in server.send_requests()}
    assert first == second
    assert sorted(first) == ["k-0", "k-1", "k-2"]


def test_results_come_back_in_input_order_one_per_message(server: EspServer) -> None:
    messages = [make_message(n) for n in (5, 1, 4, 2, 3)]
    messages.append(make_message(1))  # the same send_id twice still gets two results
    with webhook(server, batch_size=2) as p:
        results = p.send(messages)
    assert [r.send_id for r in results] == [m.send_id for m in messages]
    assert all(isinstance(r, SendResult) and r.status == "sent" for r in results)


def test_long_keys_are_hashed_to_stay_within_the_providers_limit(server: EspServer) -> None:
    long_key = "x" * 255
    with webhook(server, batch_size=1) as p:
        p.send([make_message(1), make_message(2)], idempotency_key=long_key)
        p.send([make_message(3)], idempotency_key="y" * 300)
    keys = [r.idempotency_key or "" for r in server.send_requests()]
    assert all(len(k) == 64 for k in keys) and len(set(keys)) == 3


# -- rate limits ---------------------------------------------------------------------------


def test_a_429_pauses_every_worker_not_just_the_one_that_got_it(server: EspServer) -> None:
    # Real time: four workers, every answer takes 150 ms, but the very first request is
    # answered at once with "come back in 0.4 s". The other three finish their first request
    # long after that answer, and must then wait out the pause too.
    server.set_default(Reply(delay=0.15))
    server.script([Reply(status=429, retry_after="0.4")])
    with webhook(server, batch_size=1, max_concurrency=4) as p:
        results = p.send([make_message(n) for n in range(1, 9)])

    assert {(r.status, r.attempts) for r in results} == {("sent", 1)}
    requests = sorted(server.send_requests(), key=lambda r: r.received_at)
    assert len(requests) == 9
    refused = requests[0]  # scripted replies go to requests in arrival order
    assert refused.status == 429
    # The first wave (one request per worker) was out before the 429; nothing after it may
    # start before the pause ends.
    assert min(r.received_at for r in requests[4:]) >= refused.received_at + 0.38


def test_requests_per_second_is_shared_by_all_workers(server: EspServer) -> None:
    # Real time: a burst of 20, then 20 per second across four workers.
    with webhook(server, batch_size=1, max_concurrency=4, requests_per_second=20) as p:
        assert p.requests_per_second == 20
        started = time.monotonic()
        p.send([make_message(n) for n in range(1, 31)])
        elapsed = time.monotonic() - started
    # The 30th token exists 0.5 s after the first was taken (less what the burst's own few
    # milliseconds refilled). Lower bounds from the client's start only: load can delay any
    # arrival, never advance one.
    assert elapsed >= 0.45
    assert max(r.received_at for r in server.send_requests()) >= started + 0.45


def test_a_spent_window_pauses_everyone_until_it_resets(server: EspServer) -> None:
    sleeps = SleepRecorder()
    server.script([Reply(headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2"})])
    with webhook(server, batch_size=1, max_concurrency=1, sleep=sleeps) as p:
        results = p.send([make_message(1), make_message(2)])
    assert [r.status for r in results] == ["sent", "sent"]
    assert sleeps.calls == pytest.approx([2.0], abs=0.01)


def test_rate_limit_waiting_is_capped_per_request(server: EspServer) -> None:
    sleeps = SleepRecorder()
    server.set_default(Reply(status=429, retry_after="4"))
    with webhook(server, max_rate_limit_wait=10, sleep=sleeps) as p:
        (result,) = p.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", True, 0)
    assert sleeps.calls == pytest.approx([4.0, 4.0], abs=0.01)  # a third wait would pass 10 s
    assert "more than max_rate_limit_wait=10s" in (result.error or "")
    assert len(server.send_requests()) == 3


def test_a_provider_saying_retry_in_zero_seconds_forever_cannot_hang_the_run(
    server: EspServer,
) -> None:
    server.set_default(Reply(status=429, retry_after="0"))
    with webhook(server, sleep=SleepRecorder()) as p:
        (result,) = p.send([make_message(1)])
    assert (result.status, result.retryable) == ("failed", True)
    assert "still rate limited after 21 answers" in (result.error or "")


def test_default_rate_comes_from_the_adapters_limits() -> None:
    with ResendProvider(KEY) as resend, ResendProvider(KEY, requests_per_second=10) as fast:
        assert (resend.requests_per_second, fast.requests_per_second) == (2.0, 10)
    with PostmarkProvider(KEY) as postmark:
        assert postmark.requests_per_second is None


# -- robustness ----------------------------------------------------------------------------


def test_an_unexpected_error_is_a_result_not_an_exception(server: EspServer) -> None:
    class Broken(WebhookProvider):
        def parse_accepted(self, response: httpx.Response, entries: list[Any]) -> Any:
            raise RuntimeError(f"bug near {SECRET}")

    with Broken(server.webhook_url, SECRET, timeout=2) as p:
        (result,) = p.send([make_message(1)])
    # The request went out and may have been accepted: never 'failed', which could be resent.
    assert result.status == "unknown"
    assert result.error == "unexpected error: RuntimeError: bug near [REDACTED]"


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: PostmarkProvider(KEY, timeout=0), "timeout"),
        (lambda: ResendProvider(KEY, max_concurrency=0), "max_concurrency"),
        (lambda: SendGridProvider(KEY, max_attempts=0), "max_attempts"),
        (lambda: WebhookProvider("https://x.example", SECRET, batch_size=0), "batch_size"),
        (lambda: ResendProvider(KEY, requests_per_second=-1), "requests_per_second"),
        (lambda: PostmarkProvider(KEY, max_rate_limit_wait=-1), "max_rate_limit_wait"),
        (lambda: ResendProvider("re_ab\ncd"), "whitespace"),
    ],
)
def test_bad_tuning_is_a_config_error(factory: Callable[[], Any], match: str) -> None:
    with pytest.raises(ProviderConfigError, match=match):
        factory()


def test_send_after_close_raises(server: EspServer) -> None:
    from dagster_project.providers.base import ProviderError

    p = webhook(server)
    p.close()
    p.close()
    with pytest.raises(ProviderError, match="closed"):
        p.send([make_message(1)])


# -- fault injection over every dialect ----------------------------------------------------


def _provider(dialect: str, server: EspServer, sleeps: SleepRecorder) -> HttpJsonProvider:
    common: dict[str, Any] = {
        "timeout": 0.15,
        "max_concurrency": 6,
        "max_attempts": 4,
        "sleep": sleeps,
        "jitter": lambda: 0.5,
    }
    if dialect == "postmark":
        provider: HttpJsonProvider = PostmarkProvider(KEY, server.url, **common)
    elif dialect == "resend":
        provider = ResendProvider(KEY, server.url, requests_per_second=1000, **common)
    elif dialect == "sendgrid":
        provider = SendGridProvider(KEY, server.url, template_id="d-123", **common)
    else:
        provider = WebhookProvider(server.webhook_url, SECRET, **common)
    provider.batch_size = 10  # many requests, so many faults
    return provider


@pytest.mark.parametrize("dialect", ["postmark", "resend", "sendgrid", "webhook"])
def test_under_random_faults_nothing_is_delivered_twice_and_every_result_is_honest(
    dialect: str,
) -> None:
    messages = [make_message(n) for n in range(1, 301)]
    sleeps = SleepRecorder()
    with EspServer(api_key=KEY, webhook_secret=SECRET) as server:
        server.random_faults(rate=0.3, seed=7, timeout_delay=0.3)
        with _provider(dialect, server, sleeps) as provider:
            results = provider.send(messages, idempotency_key="fault-run")
        accepted = server.accepted_counts()
        assert server.errors == []

    assert len(results) == len(messages)
    assert server.duplicate_deliveries() == {}
    for result in results:
        count = accepted.get(result.send_id, 0)
        if result.status == "sent":
            assert count == 1, result
        elif result.status == "failed":
            assert count == 0, result
        else:
            assert count <= 1, result
    statuses = {r.status for r in results}
    assert "sent" in statuses and "failed" in statuses
    if dialect == "resend":
        # Idempotent: lost answers are resent under the same key, so (almost) none stay unknown.
        assert sum(r.status == "unknown" for r in results) <= 10
