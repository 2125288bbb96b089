"""The Resend adapter against a real HTTP server on loopback (tests/esp_server.py).

The server honours ``Idempotency-Key`` like Resend: the same key with the same body replays
the first answer without delivering again; the same key with another body is a 409.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dagster_project.providers.base import ProviderConfigError
from dagster_project.providers.resend import ResendProvider, build_resend_email, resend_tag
from tests.support.esp_server import EspServer, Reply
from tests.support.factories import (
    SleepRecorder,
    fast_tuning,
    make_message,
    unsubscribe_headers,
)
from tests.support.providers import RecordingJournal
from tests.support.spec_schemas import validate_request_body

API_KEY = "re_unit_test_secret_0123456789abcdef"
TIMEOUT = 0.2  # only for the tests that wait a timeout out; the rest keep fast_tuning's patient one
KEY = "batch-0123456789abcdef"


@pytest.fixture
def server(start_esp: Callable[..., EspServer]) -> EspServer:
    return start_esp(api_key=API_KEY, validate=["resend"])


def make_provider(url: str, sleeps: SleepRecorder, **overrides: Any) -> ResendProvider:
    return ResendProvider(
        API_KEY,
        url,
        # The 2/s default rate has its own test.
        **fast_tuning(sleeps, **{"requests_per_second": 1000.0, **overrides}),
    )


@pytest.fixture
def provider(server: EspServer, sleeps: SleepRecorder) -> Iterator[ResendProvider]:
    with make_provider(server.url, sleeps) as p:
        yield p


# -- payload and protocol ------------------------------------------------------------------


def test_one_batch_request_matching_resends_published_schema(
    server: EspServer, provider: ResendProvider
) -> None:
    results = provider.send([make_message(1), make_message(2)], idempotency_key=KEY)

    assert [r.status for r in results] == ["sent", "sent"]
    assert all(r.provider_message_id for r in results)
    (request,) = server.send_requests()
    validate_request_body("resend", request.body)
    assert request.path == "/emails/batch"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.idempotency_key == KEY
    first = request.body[0]
    assert first["from"] == "Nudge Team <hello@nudge.example>"
    assert first["to"] == ["customer1@example.com"]
    assert {"name": "send_id", "value": "send-0001"} in first["tags"]
    assert {"name": "trigger", "value": "welcome"} in first["tags"]
    answered = json.loads(request.answer)["data"]
    assert [r.provider_message_id for r in results] == [row["id"] for row in answered]


def test_unsubscribe_headers_ride_in_the_emails_headers_only_on_their_message(
    server: EspServer, provider: ResendProvider
) -> None:
    messages = [make_message(1, headers=unsubscribe_headers(1)), make_message(2)]
    results = provider.send(messages, idempotency_key=KEY)

    assert [r.status for r in results] == ["sent", "sent"]
    (request,) = server.send_requests()  # the server validated it against Resend's spec
    validate_request_body("resend", request.body)
    with_headers, without = request.body
    assert with_headers["headers"] == unsubscribe_headers(1)
    assert "headers" not in without


def test_a_header_with_a_line_break_fails_its_message_alone(
    server: EspServer, provider: ResendProvider
) -> None:
    injected = {"List-Unsubscribe": "<https://x.example/u/1>\r\nBcc: victim@example.com"}
    results = provider.send([make_message(1, headers=injected), make_message(2)])

    assert [(r.status, r.attempts, r.retryable) for r in results] == [
        ("failed", 0, False),
        ("sent", 1, False),
    ]
    assert "List-Unsubscribe has a line break (CR or LF)" in (results[0].error or "")
    assert server.received_send_ids() == ["send-0002"]


def test_tags_only_hold_characters_resend_accepts() -> None:
    assert resend_tag("campaign name", "spring/2025 ☀") == {
        "name": "campaign_name",
        "value": "spring_2025__",
    }
    item = build_resend_email(make_message(1, custom_args={"a.b": "c d", "send_id": "send-0001"}))
    validate_request_body("resend", [item])


def test_a_batch_without_a_key_still_gets_one_for_its_own_retries(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    server.script([Reply(delay=TIMEOUT * 2)])
    with make_provider(server.url, sleeps, timeout=TIMEOUT) as provider:
        (result,) = provider.send([make_message(1)])
    assert result.status == "sent"
    keys = [r.idempotency_key for r in server.send_requests()]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
    assert server.accepted_counts() == {"send-0001": 1}


# -- idempotency ---------------------------------------------------------------------------


def test_large_batches_get_deterministic_sub_keys_so_a_rerun_delivers_nothing_twice(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    messages = [make_message(n) for n in range(1, 251)]
    with make_provider(server.url, sleeps) as provider:
        first = provider.send(messages, idempotency_key=KEY)
        # A crash before the results were recorded: the next run sends the same batch, maybe
        # listed in another order, with the same key.
        second = provider.send(list(reversed(messages)), idempotency_key=KEY)

    assert all(r.status == "sent" for r in first + second)
    requests = server.send_requests()
    assert sorted(r.idempotency_key or "" for r in requests[:3]) == [
        f"{KEY}-0",
        f"{KEY}-1",
        f"{KEY}-2",
    ]
    assert sorted(len(r.body) for r in requests[:3]) == [50, 100, 100]
    assert [r.replayed for r in requests] == [False] * 3 + [True] * 3
    assert server.duplicate_deliveries() == {}
    assert len(server.accepted_counts()) == 250
    by_id = {r.send_id: r.provider_message_id for r in first}
    assert all(by_id[r.send_id] == r.provider_message_id for r in second)


def test_a_read_timeout_is_resent_with_the_same_key_and_delivered_once(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    # The server accepts the batch, then answers too late: the client retries with the same
    # key and gets the first answer replayed.
    server.script([Reply(delay=TIMEOUT * 2)])

    with make_provider(server.url, sleeps, timeout=TIMEOUT) as provider:
        results = provider.send([make_message(1), make_message(2)], idempotency_key=KEY)

    assert [(r.status, r.attempts) for r in results] == [("sent", 2), ("sent", 2)]
    requests = server.send_requests()
    assert [r.idempotency_key for r in requests] == [KEY, KEY]
    assert [r.replayed for r in requests] == [False, True]
    assert server.accepted_counts() == {"send-0001": 1, "send-0002": 1}
    assert sleeps.calls == [0.5]


def test_a_dropped_connection_is_resent_with_the_same_key(
    server: EspServer, provider: ResendProvider
) -> None:
    server.script([Reply(drop=True)])
    (result,) = provider.send([make_message(1)], idempotency_key=KEY)
    assert result.status == "sent"
    assert server.accepted_counts() == {"send-0001": 1}


def test_lost_answers_every_time_end_unknown(server: EspServer, provider: ResendProvider) -> None:
    server.set_default(Reply(status=503, drop=True))
    (result,) = provider.send([make_message(1)], idempotency_key=KEY)
    assert (result.status, result.attempts) == ("unknown", 3)
    assert len(server.send_requests()) == 3


def test_a_key_reused_for_another_payload_is_unknown_and_not_resent(
    server: EspServer, provider: ResendProvider
) -> None:
    provider.send([make_message(1)], idempotency_key=KEY)
    # The same key for different content (say, the batch was re-rendered differently).
    (result,) = provider.send([make_message(1, subject="Changed")], idempotency_key=KEY)

    assert result.status == "unknown"
    assert result.error == (
        "HTTP 409: invalid_idempotent_request: Same idempotency key used with a different "
        "request payload."
    )
    assert len(server.send_requests()) == 2
    assert server.accepted_counts() == {"send-0001": 1}


def test_a_concurrent_request_conflict_is_retried_with_the_same_key(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    server.script([Reply(status=409, code="concurrent_idempotent_requests")])
    with make_provider(server.url, sleeps) as provider:
        (result,) = provider.send([make_message(1)], idempotency_key=KEY)
    assert (result.status, result.attempts) == ("sent", 2)


# -- splitting -----------------------------------------------------------------------------


def test_a_422_splits_the_batch_until_the_bad_row_stands_alone(
    server: EspServer, provider: ResendProvider
) -> None:
    server.fail_message("send-0006", "Invalid `to` field.", code="validation_error")
    messages = [make_message(n) for n in range(1, 9)]

    results = provider.send(messages, idempotency_key=KEY)

    statuses = {r.send_id: r.status for r in results}
    assert statuses.pop("send-0006") == "failed"
    assert set(statuses.values()) == {"sent"}
    bad = results[5]
    assert bad.error == "HTTP 422: validation_error: Invalid `to` field."
    assert bad.retryable is False
    # 8 -> 4 + 4 -> 2 + 2 -> 1 + 1: log2(8) levels of halves around the bad row.
    keys = [r.idempotency_key for r in server.send_requests()]
    assert keys == [
        KEY,
        f"{KEY}-0",  # send-0001..4: accepted
        f"{KEY}-1",  # send-0005..8: rejected
        f"{KEY}-1-0",  # send-0005..6: rejected
        f"{KEY}-1-0-0",  # send-0005: accepted
        f"{KEY}-1-0-1",  # send-0006: rejected alone, failed
        f"{KEY}-1-1",  # send-0007..8: accepted
    ]
    assert bad.attempts == 4
    assert server.duplicate_deliveries() == {}
    assert len(server.accepted_counts()) == 7


# -- rate limits ---------------------------------------------------------------------------


def test_the_default_rate_is_resends_two_requests_per_second(server: EspServer) -> None:
    sleeps = SleepRecorder()
    with ResendProvider(API_KEY, server.url, max_concurrency=1, sleep=sleeps) as p:
        assert p.limits.requests_per_second == 2.0
        assert p.requests_per_second == 2.0
        for n in range(1, 6):
            p.send([make_message(n)])
    # A burst of two, then one request every half second.
    assert len(sleeps.calls) == 3
    assert sum(sleeps.calls) == pytest.approx(1.5, abs=0.05)


def test_429_honours_ratelimit_reset_and_is_not_an_attempt(
    server: EspServer, provider: ResendProvider, sleeps: SleepRecorder
) -> None:
    server.script([Reply(status=429, headers={"ratelimit-reset": "3", "ratelimit-remaining": "0"})])
    (result,) = provider.send([make_message(1)], idempotency_key=KEY)
    assert (result.status, result.attempts) == ("sent", 1)
    assert sleeps.calls == pytest.approx([3.0], abs=0.01)


def test_a_spent_daily_quota_fails_retryable_without_waiting(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    server.script([Reply(status=429, code="daily_quota_exceeded")])
    with make_provider(server.url, sleeps, max_concurrency=1) as p:
        results = p.send([make_message(n) for n in range(1, 201)], idempotency_key=KEY)
    assert {(r.status, r.retryable, r.attempts) for r in results} == {("failed", True, 0)}
    assert sleeps.calls == []
    # The first answer said "not today": the batch's second request was not even sent.
    assert len(server.send_requests()) == 1
    assert (results[0].error or "").startswith("HTTP 429: daily_quota_exceeded")
    assert (results[-1].error or "").startswith("not sent: Resend is rate limiting")


def test_5xx_is_retried_then_fails_retryable(
    server: EspServer, provider: ResendProvider, sleeps: SleepRecorder
) -> None:
    server.set_default(500)
    (result,) = provider.send([make_message(1)], idempotency_key=KEY)
    assert (result.status, result.retryable, result.attempts) == ("failed", True, 3)
    assert result.error == "HTTP 500: internal_server_error: Internal Server Error"
    assert sleeps.calls == [0.5, 1.0]


# -- secrets -------------------------------------------------------------------------------


def test_the_api_key_never_leaks(
    server: EspServer, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail_message("send-0001", f"bad key {API_KEY} for customer1@example.com")
    with make_provider(server.url, sleeps) as p:
        (result,) = p.send([make_message(1)], idempotency_key=KEY)
        text = repr(p)
    with ResendProvider("re_wrong", server.url, timeout=TIMEOUT) as wrong:
        (forbidden,) = wrong.send([make_message(2)])

    assert result.error == "HTTP 422: validation_error: bad key [REDACTED] for c***@e***.com"
    assert (forbidden.status, forbidden.error) == (
        "failed",
        "HTTP 403: invalid_api_key: API key is invalid",
    )
    for blob in [result.error, text, caplog.text, *(str(rec.args) for rec in caplog.records)]:
        assert API_KEY not in blob
    assert "api_key=<hidden>" in text
    assert "customer1@example.com" not in caplog.text


def test_config_errors() -> None:
    with pytest.raises(ProviderConfigError, match="Resend API key is empty"):
        ResendProvider(" ")
    with pytest.raises(ProviderConfigError, match="Resend base URL"):
        ResendProvider(API_KEY, "api.resend.com")
    with ResendProvider(API_KEY) as p:
        assert (p.name, p.base_url) == ("resend", "https://api.resend.com")
        assert p.limits.idempotent is True
        assert p.limits.max_batch == 100 * 8
        # At Resend's default 2 requests/s, a hand-over is the two requests of a second.
        assert p.limits.default_batch == 100 * 2
    with ResendProvider(API_KEY, requests_per_second=10) as raised:
        assert raised.limits.default_batch == 100 * 8
        assert p.limits.per_message_results is False


def test_a_split_batch_is_journaled_as_returned_before_its_halves_go_out(
    server: EspServer, provider: ResendProvider
) -> None:
    # Refused whole, then split: the journal must say the whole batch is off the wire again,
    # so a crash now leaves in doubt only the half that went out next, not all four.
    server.fail_message("send-0004", "Invalid `to` field.", code="validation_error")
    journal = RecordingJournal()
    provider.send([make_message(n) for n in range(1, 5)], idempotency_key=KEY, journal=journal)
    every = ("send-0001", "send-0002", "send-0003", "send-0004")
    assert journal.events[:3] == [
        ("handed_over", every, KEY),
        ("returned", every),
        ("handed_over", every[:2], f"{KEY}-0"),
    ]
    # Each request answered before the worker's next hand-over; every send settled once.
    answered = [ids for event, *rest in journal.events if event == "answered" for ids in rest]
    assert sorted(i for ids in answered for i in ids) == list(every)
    for before, after in zip(journal.events, journal.events[1:], strict=False):
        if after[0] == "handed_over":
            assert before[0] in ("answered", "returned"), journal.events
