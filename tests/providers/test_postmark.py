"""The Postmark adapter against a real HTTP server on loopback (tests/esp_server.py).

Every request body is validated against Postmark's published spec by the server itself
(``validate=["postmark"]``; without ``../shared/specs`` only the tests that check the schema
skip, see tests/spec_schemas.py); waits go through a recorder instead of ``time.sleep``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dagster_project.providers.base import ProviderConfigError
from dagster_project.providers.postmark import (
    TRANSIENT_ERROR_CODES,
    PostmarkProvider,
    build_postmark_message,
)
from tests.support.esp_server import EspServer, Reply, bad_request
from tests.support.factories import (
    SleepRecorder,
    fast_tuning,
    make_message,
    unsubscribe_headers,
)
from tests.support.spec_schemas import validate_request_body

TOKEN = "pm-unit-test-secret-0123456789abcdef"
TIMEOUT = 0.2  # only for the tests that wait a timeout out; the rest keep fast_tuning's patient one


@pytest.fixture
def server(start_esp: Callable[..., EspServer]) -> EspServer:
    return start_esp(api_key=TOKEN, validate=["postmark"])


def make_provider(url: str, sleeps: SleepRecorder, **overrides: Any) -> PostmarkProvider:
    return PostmarkProvider(TOKEN, url, **fast_tuning(sleeps, **overrides))


@pytest.fixture
def provider(server: EspServer, sleeps: SleepRecorder) -> Iterator[PostmarkProvider]:
    with make_provider(server.url, sleeps) as p:
        yield p


# -- payload and protocol ------------------------------------------------------------------


def test_one_batch_request_matching_postmarks_published_schema(
    server: EspServer, provider: PostmarkProvider
) -> None:
    messages = [make_message(n) for n in range(1, 4)]

    results = provider.send(messages)

    assert [r.status for r in results] == ["sent"] * 3
    assert all(r.provider_message_id for r in results)
    assert len({r.provider_message_id for r in results}) == 3
    (request,) = server.send_requests()
    validate_request_body("postmark", request.body)
    assert request.path == "/email/batch"
    assert request.headers["x-postmark-server-token"] == TOKEN
    first = request.body[0]
    assert first["From"] == "Nudge Team <hello@nudge.example>"
    assert first["To"] == "customer1@example.com"
    assert first["Tag"] == "welcome"
    assert first["MessageStream"] == "outbound"
    assert first["Metadata"] == {"send_id": "send-0001", "trigger": "welcome", "step": "day0"}
    assert first["HtmlBody"] == "<p>Hello customer 1</p>"
    assert first["TextBody"] == "Hello customer 1"


def test_unsubscribe_headers_ride_as_postmark_headers_only_on_their_message(
    server: EspServer, provider: PostmarkProvider
) -> None:
    results = provider.send([make_message(1, headers=unsubscribe_headers(1)), make_message(2)])

    assert [r.status for r in results] == ["sent", "sent"]
    (request,) = server.send_requests()  # the server validated it against Postmark's spec
    validate_request_body("postmark", request.body)
    with_headers, without = request.body
    assert with_headers["Headers"] == [
        {"Name": "List-Unsubscribe", "Value": unsubscribe_headers(1)["List-Unsubscribe"]},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
    ]
    assert "Headers" not in without


def test_a_header_with_a_line_break_fails_its_message_alone(
    server: EspServer, provider: PostmarkProvider
) -> None:
    injected = {"List-Unsubscribe": "<https://x.example/u/1>\r\nBcc: victim@example.com"}
    results = provider.send([make_message(1, headers=injected), make_message(2)])

    assert [(r.status, r.attempts, r.retryable) for r in results] == [
        ("failed", 0, False),
        ("sent", 1, False),
    ]
    assert "List-Unsubscribe has a line break (CR or LF)" in (results[0].error or "")
    assert server.received_send_ids() == ["send-0002"]


def test_message_stream_is_configurable(server: EspServer, sleeps: SleepRecorder) -> None:
    with make_provider(server.url, sleeps, message_stream="broadcast") as p:
        p.send([make_message(1)])
    assert server.send_requests()[0].body[0]["MessageStream"] == "broadcast"


def test_metadata_keeps_the_ledger_keys_and_at_most_ten_fields() -> None:
    extra = {f"k{i}": i for i in range(20)}
    item = build_postmark_message(make_message(1, custom_args=extra), message_stream="outbound")
    assert len(item["Metadata"]) == 10
    assert item["Metadata"]["send_id"] == "send-0001"
    assert all(isinstance(v, str) for v in item["Metadata"].values())
    validate_request_body("postmark", [item])


def test_batches_hold_at_most_500_messages(server: EspServer, sleeps: SleepRecorder) -> None:
    with make_provider(server.url, sleeps) as provider:
        results = provider.send([make_message(n) for n in range(1, 502)])
    assert all(r.status == "sent" for r in results)
    assert sorted(len(r.body) for r in server.send_requests()) == [1, 500]


def test_unsendable_message_fails_without_a_request(
    server: EspServer, provider: PostmarkProvider
) -> None:
    results = provider.send([make_message(1, html="", text=""), make_message(2, to_email="x")])
    assert [(r.status, r.attempts) for r in results] == [("failed", 0), ("failed", 0)]
    assert server.send_requests() == []


# -- per-message results -------------------------------------------------------------------


def test_per_message_error_codes_fail_only_their_message(
    server: EspServer, provider: PostmarkProvider
) -> None:
    inactive = "You tried to send to recipient(s) that have been marked as inactive."
    server.fail_message("send-0002", inactive, code=406)
    server.fail_message("send-0004", "Invalid 'To' address: 'customer4@example.com'.", code=300)
    server.fail_message("send-0005", "Not allowed to send: you have run out of credits.", code=405)

    results = provider.send([make_message(n) for n in range(1, 7)])

    assert [r.status for r in results] == ["sent", "failed", "sent", "failed", "failed", "sent"]
    assert results[1].error == f"Postmark error 406: {inactive}"
    assert results[1].retryable is False
    # Postmark's text quoted the address: the error keeps the reason, not the address.
    assert results[3].error is not None
    assert results[3].error.startswith("Postmark error 300: Invalid 'To' address: ")
    assert "customer4@example.com" not in results[3].error
    assert results[3].retryable is False
    assert 405 in TRANSIENT_ERROR_CODES
    assert results[4].retryable is True  # an account problem: a later tick may send it
    assert len(server.send_requests()) == 1  # no split: Postmark reports per message
    assert server.accepted_send_ids() == {"send-0001", "send-0003", "send-0006"}


def test_an_unreadable_200_leaves_the_batch_unknown(
    server: EspServer, provider: PostmarkProvider
) -> None:
    server.script([Reply(status=200, body="<html>proxy says hi</html>")])
    results = provider.send([make_message(1), make_message(2)])
    assert [r.status for r in results] == ["unknown", "unknown"]
    assert "0 results for 2 messages" in (results[0].error or "")
    assert len(server.send_requests()) == 1


def test_a_request_level_422_fails_every_message_without_splitting(
    server: EspServer, provider: PostmarkProvider
) -> None:
    server.script([Reply(status=422, code=401, errors=[{"message": "Sender not confirmed."}])])
    results = provider.send([make_message(n) for n in range(1, 5)])
    assert {r.status for r in results} == {"failed"}
    assert results[0].error == "HTTP 422: Postmark error 401: Sender not confirmed."
    assert results[0].retryable is False
    assert len(server.send_requests()) == 1


def test_a_413_splits_the_batch_in_halves(server: EspServer, provider: PostmarkProvider) -> None:
    server.script([bad_request("Payload too large", status=413)])
    results = provider.send([make_message(n) for n in range(1, 5)])
    assert [r.status for r in results] == ["sent"] * 4
    assert [len(r.body) for r in server.send_requests()] == [4, 2, 2]
    assert [r.attempts for r in results] == [2] * 4  # each message rode on two requests


def test_a_batch_over_the_byte_limit_is_split_before_sending(
    server: EspServer, provider: PostmarkProvider
) -> None:
    one = len(provider.encode([provider.build_item(make_message(1))]))
    provider.limits = dataclasses.replace(provider.limits, max_request_bytes=one * 2 + 10)
    huge = make_message(9, html="x" * (one * 3))

    results = provider.send([make_message(n) for n in range(1, 6)] + [huge])

    assert [r.status for r in results] == ["sent"] * 5 + ["failed"]
    assert results[5].attempts == 0 and "over Postmark's limit" in (results[5].error or "")
    assert all(len(r.raw) <= one * 2 + 10 for r in server.send_requests())
    assert sorted(server.received_send_ids()) == [f"send-000{n}" for n in range(1, 6)]


# -- retries -------------------------------------------------------------------------------


def test_429_waits_retry_after_and_is_not_an_attempt(
    server: EspServer, provider: PostmarkProvider, sleeps: SleepRecorder
) -> None:
    server.script([Reply(status=429, retry_after="2"), Reply(status=429, retry_after="1")])
    (result,) = provider.send([make_message(1)])
    assert result.status == "sent"
    assert result.attempts == 1
    assert sleeps.calls == pytest.approx([2.0, 1.0], abs=0.01)
    assert len(server.send_requests()) == 3


def test_5xx_is_retried_then_fails_retryable(
    server: EspServer, provider: PostmarkProvider, sleeps: SleepRecorder
) -> None:
    server.set_default(503)
    results = provider.send([make_message(1), make_message(2)])
    assert [(r.status, r.retryable, r.attempts) for r in results] == [("failed", True, 3)] * 2
    assert results[0].error == "HTTP 503: Postmark error 100: Service Unavailable"
    assert sleeps.calls == [0.5, 1.0]
    assert server.accepted_counts() == {}


def test_500_then_200_is_sent(
    server: EspServer, provider: PostmarkProvider, sleeps: SleepRecorder
) -> None:
    server.script([500])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("sent", 2)
    assert sleeps.calls == [0.5]


def test_a_read_timeout_is_unknown_and_never_resent(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    # Postmark has no idempotency key: the slow request may well have been accepted.
    server.script([Reply(delay=TIMEOUT * 2)])

    with make_provider(server.url, sleeps, timeout=TIMEOUT) as provider:
        results = provider.send([make_message(1), make_message(2)])

    assert [r.status for r in results] == ["unknown", "unknown"]
    assert results[0].error is not None and results[0].error.startswith("ReadTimeout")
    assert "Postmark may have accepted it, not retried" in results[0].error
    assert len(server.send_requests()) == 1
    assert sleeps.calls == []
    assert server.accepted_counts() == {"send-0001": 1, "send-0002": 1}


def test_a_dropped_connection_is_unknown_and_never_resent(
    server: EspServer, provider: PostmarkProvider
) -> None:
    server.script([Reply(drop=True)])
    (result,) = provider.send([make_message(1)])
    assert result.status == "unknown"
    assert result.error is not None and result.error.startswith("RemoteProtocolError")
    assert len(server.send_requests()) == 1


def test_transient_error_code_in_a_422_is_retried(
    server: EspServer, provider: PostmarkProvider
) -> None:
    server.script([Reply(status=422, code=100, errors=[{"message": "Maintenance."}])])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("sent", 2)


# -- secrets and personal data -------------------------------------------------------------


def test_the_token_never_leaks_and_addresses_are_masked(
    server: EspServer, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail_message("send-0001", f"echo: {TOKEN} for customer1@example.com", code=300)
    server.script([500, 500], send_id="send-0002")

    with make_provider(server.url, sleeps, max_attempts=2) as p:
        results = p.send([make_message(1)])
        results += p.send([make_message(2)])
        text = repr(p) + str(p)
    with PostmarkProvider("wrong-token", server.url, timeout=TIMEOUT) as wrong:
        (unauthorized,) = wrong.send([make_message(3)])

    assert [r.status for r in results] == ["failed", "failed"]
    assert results[0].error == "Postmark error 300: echo: [REDACTED] for c***@e***.com"
    assert unauthorized.status == "failed" and unauthorized.attempts == 1
    assert "valid Server token" in (unauthorized.error or "")
    assert "server_token=<hidden>" in text
    everything = [r.error or "" for r in [*results, unauthorized]]
    everything += [text, caplog.text, *(str(rec.args) for rec in caplog.records)]
    for blob in everything:
        assert TOKEN not in blob
    assert "customer1@example.com" not in caplog.text
    assert "c***@e***.com" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"server_token": ""}, "token is empty"),
        ({"server_token": "abc def"}, "whitespace"),
        ({"base_url": "ftp://x"}, "http"),
        ({"message_stream": " "}, "message_stream"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"requests_per_second": 0}, "requests_per_second"),
    ],
)
def test_config_errors_are_raised_before_any_send(kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"server_token": TOKEN, **kwargs}
    with pytest.raises(ProviderConfigError, match=match) as info:
        PostmarkProvider(**arguments)
    assert "abc def" not in str(info.value)


def test_defaults() -> None:
    with PostmarkProvider(TOKEN) as p:
        assert p.name == "postmark"
        assert p.base_url == "https://api.postmarkapp.com"
        # One call is one round of its 8 workers' requests, 500 messages each.
        assert p.limits.max_batch == p.limits.default_batch == 500 * 8
        assert p.limits.max_request_bytes == 50_000_000
        assert p.limits.idempotent is False
        assert p.limits.per_message_results is True
