"""The webhook adapter against a real HTTP server that checks every signature.

The server verifies each request with :func:`verify_webhook_signature`, exactly as a gateway
would, so a request that reaches a 2xx was correctly signed.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jsonschema import ValidationError

from dagster_project.providers.base import ProviderConfigError
from dagster_project.providers.webhook import (
    WebhookProvider,
    build_webhook_message,
    sign_webhook_body,
    verify_webhook_signature,
)
from tests.support.esp_server import EspServer, Reply
from tests.support.factories import (
    SleepRecorder,
    fast_tuning,
    make_message,
    unsubscribe_headers,
)
from tests.support.spec_schemas import validate_request_body

SECRET = "whsec-unit-test-0123456789abcdef"
TIMEOUT = 0.2  # only for the tests that wait a timeout out; the rest keep fast_tuning's patient one


@pytest.fixture
def server(start_esp: Callable[..., EspServer]) -> EspServer:
    return start_esp(webhook_secret=SECRET, validate=True)


def make_provider(url: str, sleeps: SleepRecorder, **overrides: Any) -> WebhookProvider:
    return WebhookProvider(url, SECRET, **fast_tuning(sleeps, **overrides))


@pytest.fixture
def provider(server: EspServer, sleeps: SleepRecorder) -> Iterator[WebhookProvider]:
    with make_provider(server.webhook_url, sleeps) as p:
        yield p


# -- the contract --------------------------------------------------------------------------


def test_messages_are_posted_signed_with_an_idempotency_key(
    server: EspServer, provider: WebhookProvider
) -> None:
    results = provider.send([make_message(1), make_message(2)], idempotency_key="k-1")

    assert [r.status for r in results] == ["sent", "sent"]
    assert all(r.provider_message_id for r in results)
    (request,) = server.send_requests()
    validate_request_body("webhook", request.body)
    assert request.headers["content-type"] == "application/json"
    assert request.idempotency_key == "k-1"
    timestamp = request.headers["x-nudge-timestamp"]
    signature = request.headers["x-nudge-signature"]
    assert signature == sign_webhook_body(SECRET, request.raw, int(timestamp))
    assert verify_webhook_signature(SECRET, request.raw, timestamp, signature)
    assert request.body["messages"][0] == {
        "send_id": "send-0001",
        "trigger": "welcome",
        "step": "day0",
        "customer_id": "cust-1",
        "to": "customer1@example.com",
        "from": "Nudge Team <hello@nudge.example>",
        "subject": "Welcome aboard #1 — café ☕",
        "html": "<p>Hello customer 1</p>",
        "text": "Hello customer 1",
        "custom_args": {"send_id": "send-0001", "trigger": "welcome", "step": "day0"},
    }


def test_unsubscribe_headers_ride_in_the_message_json_only_when_it_has_them(
    server: EspServer, provider: WebhookProvider
) -> None:
    results = provider.send([make_message(1, headers=unsubscribe_headers(1)), make_message(2)])

    assert [r.status for r in results] == ["sent", "sent"]
    (request,) = server.send_requests()  # the server validated it against the contract
    validate_request_body("webhook", request.body)
    with_headers, without = request.body["messages"]
    assert with_headers["headers"] == unsubscribe_headers(1)
    assert "headers" not in without


def test_a_header_with_a_line_break_fails_its_message_alone(
    server: EspServer, provider: WebhookProvider
) -> None:
    injected = {"List-Unsubscribe": "<https://x.example/u/1>\r\nBcc: victim@example.com"}
    results = provider.send([make_message(1, headers=injected), make_message(2)])

    assert [(r.status, r.attempts, r.retryable) for r in results] == [
        ("failed", 0, False),
        ("sent", 1, False),
    ]
    assert "List-Unsubscribe has a line break (CR or LF)" in (results[0].error or "")
    assert server.received_send_ids() == ["send-0002"]
    # The contract itself refuses one too, for gateways that check it.
    item = {**build_webhook_message(make_message(3)), "headers": injected}
    with pytest.raises(ValidationError):
        validate_request_body("webhook", {"messages": [item]})


def test_the_schema_rejects_a_body_outside_the_contract() -> None:
    with pytest.raises(ValidationError):
        validate_request_body("webhook", {"messages": [{"send_id": "x"}]})


def test_batch_size_is_configurable(server: EspServer, sleeps: SleepRecorder) -> None:
    with make_provider(server.webhook_url, sleeps, batch_size=2) as p:
        results = p.send([make_message(n) for n in range(1, 6)], idempotency_key="k")
    assert all(r.status == "sent" for r in results)
    requests = sorted(server.send_requests(), key=lambda r: r.idempotency_key or "")
    assert [len(r.body["messages"]) for r in requests] == [2, 2, 1]
    assert [r.idempotency_key for r in requests] == ["k-0", "k-1", "k-2"]


def test_a_bad_signature_is_refused_by_the_receiver(server: EspServer) -> None:
    with WebhookProvider(server.webhook_url, "whsec-some-other-secret-value", timeout=1) as p:
        (result,) = p.send([make_message(1)])
    assert (result.status, result.error) == ("failed", "HTTP 401: invalid signature")
    assert server.accepted_counts() == {}


# -- verify_webhook_signature --------------------------------------------------------------


def test_verify_webhook_signature() -> None:
    body = b'{"messages": []}'
    now = 1_767_225_600
    good = sign_webhook_body(SECRET, body, now)

    assert verify_webhook_signature(SECRET, body, str(now), good, now=now)
    assert verify_webhook_signature(SECRET.encode(), body, now, good, now=now + 299)
    # Rotation: the receiver may be sent several signatures; one valid one is enough.
    assert verify_webhook_signature(SECRET, body, now, f"sha256=00ff, {good}", now=now)

    assert not verify_webhook_signature("another-secret", body, now, good, now=now)
    assert not verify_webhook_signature(SECRET, body + b" ", now, good, now=now)
    assert not verify_webhook_signature(SECRET, body, now + 1, good, now=now)  # ts is signed
    assert not verify_webhook_signature(SECRET, body, now, good, now=now + 301)  # replayed late
    assert not verify_webhook_signature(SECRET, body, now, good, now=now - 301)  # from the future
    assert not verify_webhook_signature(SECRET, body, now, good, 10, now=now + 11)
    assert not verify_webhook_signature(SECRET, body, None, good, now=now)
    assert not verify_webhook_signature(SECRET, body, "soon", good, now=now)
    assert not verify_webhook_signature(SECRET, body, now, None, now=now)
    assert not verify_webhook_signature(SECRET, body, now, good.removeprefix("sha256="), now=now)


def test_each_retry_is_signed_afresh_with_the_same_body_and_key(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    ticks = itertools.count(int(time.time()), 60)
    server.script([503])
    with make_provider(server.webhook_url, sleeps, wall_clock=lambda: float(next(ticks))) as p:
        (result,) = p.send([make_message(1)], idempotency_key="k")
    assert result.status == "sent"
    first, second = server.send_requests()
    assert first.raw == second.raw
    assert first.idempotency_key == second.idempotency_key == "k"
    assert int(second.headers["x-nudge-timestamp"]) == int(first.headers["x-nudge-timestamp"]) + 60
    assert first.headers["x-nudge-signature"] != second.headers["x-nudge-signature"]


# -- answers -------------------------------------------------------------------------------


def test_per_message_results(server: EspServer, provider: WebhookProvider) -> None:
    server.fail_message("send-0002", "mailbox full for customer2@example.com")
    results = provider.send([make_message(n) for n in range(1, 4)])
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].error == "mailbox full for c***@e***.com"
    assert results[1].retryable is False
    assert server.accepted_send_ids() == {"send-0001", "send-0003"}


def test_a_bare_2xx_means_all_sent_and_unlisted_messages_are_sent(
    server: EspServer, provider: WebhookProvider
) -> None:
    server.script(
        [
            Reply(status=204, body=""),
            Reply(
                json_body={
                    "results": [
                        {"send_id": "send-0004", "status": "failed", "retryable": True},
                        {"send_id": "send-0005", "status": "queued"},
                        {"send_id": "not-ours", "status": "failed"},
                        "junk",
                    ]
                }
            ),
        ]
    )
    bare = provider.send([make_message(1), make_message(2)])
    listed = provider.send([make_message(n) for n in (3, 4, 5)])

    assert [r.status for r in bare] == ["sent", "sent"]
    assert [r.provider_message_id for r in bare] == [None, None]
    assert [r.status for r in listed] == ["sent", "failed", "unknown"]
    assert listed[1].retryable is True
    assert listed[1].error == "the webhook reported it failed"
    assert listed[2].error == "the webhook answered status 'queued'"


def test_a_4xx_fails_the_whole_request_without_splitting(
    server: EspServer, provider: WebhookProvider
) -> None:
    server.script([Reply(status=400, json_body={"error": "unknown trigger"})])
    results = provider.send([make_message(n) for n in range(1, 5)])
    assert {(r.status, r.error) for r in results} == {("failed", "HTTP 400: unknown trigger")}
    assert len(server.send_requests()) == 1


def test_429_waits_and_5xx_retries(
    server: EspServer, provider: WebhookProvider, sleeps: SleepRecorder
) -> None:
    server.script([Reply(status=429, retry_after="4"), 500, 502])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("sent", 3)
    assert sleeps.calls == pytest.approx([4.0, 0.5, 1.0], abs=0.01)


def test_a_lost_answer_is_unknown_unless_the_gateway_is_idempotent(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    server.script([Reply(delay=TIMEOUT * 2)])
    with make_provider(server.webhook_url, sleeps, timeout=TIMEOUT) as p:
        (lost,) = p.send([make_message(1)], idempotency_key="k-lost")
    assert lost.status == "unknown"
    assert len(server.send_requests()) == 1

    server.idempotent_dialects = frozenset({"webhook"})
    server.script([Reply(delay=TIMEOUT * 2)])
    with make_provider(server.webhook_url, sleeps, idempotent=True, timeout=TIMEOUT) as p:
        assert p.limits.idempotent is True
        (retried,) = p.send([make_message(2)], idempotency_key="k-retried")
    assert (retried.status, retried.attempts) == ("sent", 2)
    assert server.accepted_counts()["send-0002"] == 1


# -- secrets -------------------------------------------------------------------------------


def test_the_secret_and_url_credentials_never_leak(
    server: EspServer, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = server.webhook_url + "?token=url-secret-token-42"
    server.fail_message("send-0001", f"echo {SECRET} url-secret-token-42 customer1@example.com")
    server.script([500, 500, 500], send_id="send-0002")
    with make_provider(url, sleeps) as p:
        results = p.send([make_message(1)]) + p.send([make_message(2)])
        text = repr(p)

    assert results[0].error == "echo [REDACTED] [REDACTED] c***@e***.com"
    assert results[1].status == "failed" and results[1].retryable is True
    assert text.startswith(f"WebhookProvider(url='{server.webhook_url}', secret=<hidden>")
    for blob in [*(r.error or "" for r in results), text, caplog.text]:
        assert SECRET not in blob
        assert "url-secret-token-42" not in blob
    assert "customer1@example.com" not in caplog.text


@pytest.mark.parametrize(
    ("url", "secret", "match"),
    [
        ("", SECRET, "Webhook URL"),
        ("mailto:x@y.z", SECRET, "Webhook URL"),
        ("https://gw.example/nudge", "", "secret is empty"),
        ("https://gw.example/nudge", "short", "too short"),
    ],
)
def test_config_errors(url: str, secret: str, match: str) -> None:
    with pytest.raises(ProviderConfigError, match=match) as info:
        WebhookProvider(url, secret)
    assert "short" not in str(info.value).replace("too short", "")


def test_defaults() -> None:
    with WebhookProvider("https://gw.example/nudge", SECRET) as p:
        assert p.name == "webhook"
        assert p.batch_size == 100
        assert p.limits.max_batch == 100
        assert p.limits.idempotent is False
    assert json.loads(p.encode([{"a": 1}])) == {"messages": [{"a": 1}]}
