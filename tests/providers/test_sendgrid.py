"""The SendGrid adapter against a real HTTP server on loopback (tests/esp_server.py).

Waits between retries go through an injected recorder instead of ``time.sleep``, so these tests
assert the exact backoff and ``Retry-After`` handling without spending the time.
"""

from __future__ import annotations

import copy
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import ValidationError

from dagster_project.config import Settings
from dagster_project.providers import (
    Message,
    ProviderConfigError,
    ProviderError,
    build_provider,
)
from dagster_project.providers.sendgrid import SendGridProvider, build_sendgrid_payload
from dagster_project.providers.wire import parse_retry_after
from tests.support import spec_schemas
from tests.support.esp_server import EspServer, Reply, bad_request
from tests.support.factories import (
    SleepRecorder,
    fast_tuning,
    make_message,
    unsubscribe_headers,
)
from tests.support.sendgrid_schema import validate_sendgrid_payload

API_KEY = "SG.unit-test-secret.0123456789abcdefghijklmnopqrstuvwxyz"
TIMEOUT = 0.3  # only for the tests that wait a timeout out; the rest keep fast_tuning's patient one


@pytest.fixture
def server(start_esp: Callable[..., EspServer]) -> EspServer:
    return start_esp(api_key=API_KEY)


@pytest.fixture
def provider(server: EspServer, sleeps: SleepRecorder) -> Iterator[SendGridProvider]:
    with make_provider(server.url, sleeps) as p:
        yield p


def make_provider(url: str, sleeps: SleepRecorder, **overrides: Any) -> SendGridProvider:
    return SendGridProvider(API_KEY, url, **fast_tuning(sleeps, **overrides))


# -- payload and protocol ------------------------------------------------------------------


def test_request_matches_sendgrids_published_schema(
    server: EspServer, provider: SendGridProvider
) -> None:
    results = provider.send([make_message(1)])

    assert results[0].status == "sent"
    (request,) = server.send_requests()
    validate_sendgrid_payload(request.body)
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    body = request.body
    assert body["from"] == {"email": "hello@nudge.example", "name": "Nudge Team"}
    assert body["personalizations"] == [
        {
            "to": [{"email": "customer1@example.com"}],
            "custom_args": {"send_id": "send-0001", "trigger": "welcome", "step": "day0"},
        }
    ]
    assert body["subject"] == "Welcome aboard #1 — café ☕"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert "custom_args" not in body  # the top-level one is typed as a string in the spec


@pytest.mark.parametrize(
    "message",
    [
        make_message(1),
        make_message(2, from_email="plain@nudge.example", custom_args={}),
        make_message(3, text=""),  # HTML-only
        make_message(4, html=""),  # text-only
        make_message(5, custom_args={"campaign": "spring", "variant": 2}),
    ],
)
def test_built_payloads_validate(message: Message) -> None:
    payload = build_sendgrid_payload(message)
    validate_sendgrid_payload(payload)
    assert payload["personalizations"][0]["custom_args"]["send_id"] == message.send_id


def test_unsubscribe_headers_ride_in_the_request_headers_and_only_on_their_message(
    start_esp: Callable[..., EspServer], sleeps: SleepRecorder
) -> None:
    server = start_esp(api_key=API_KEY, validate=["sendgrid"])
    with make_provider(server.url, sleeps) as p:
        results = p.send([make_message(1, headers=unsubscribe_headers(1)), make_message(2)])

    assert [r.status for r in results] == ["sent", "sent"]
    by_send_id = {r.send_id: r.body for r in server.send_requests()}
    with_headers, without = by_send_id["send-0001"], by_send_id["send-0002"]
    validate_sendgrid_payload(with_headers)
    validate_sendgrid_payload(without)
    assert with_headers["headers"] == unsubscribe_headers(1)  # exactly as given
    assert "headers" not in with_headers["personalizations"][0]
    assert "headers" not in without
    assert "headers" not in without["personalizations"][0]


def test_a_header_with_a_line_break_fails_its_message_alone_without_a_request(
    server: EspServer, provider: SendGridProvider
) -> None:
    injected = {"List-Unsubscribe": "<https://x.example/u/1>\r\nBcc: victim@example.com"}
    results = provider.send([make_message(1, headers=injected), make_message(2)])

    assert [(r.status, r.attempts, r.retryable) for r in results] == [
        ("failed", 0, False),
        ("sent", 1, False),
    ]
    assert results[0].error is not None
    assert "List-Unsubscribe has a line break (CR or LF)" in results[0].error
    assert "victim" not in results[0].error
    assert server.received_send_ids() == ["send-0002"]


def test_custom_args_always_carry_the_ledger_keys_as_strings() -> None:
    payload = build_sendgrid_payload(make_message(1, custom_args={"variant": 2}))
    assert payload["personalizations"][0]["custom_args"] == {
        "variant": "2",
        "send_id": "send-0001",
        "trigger": "welcome",
        "step": "day0",
    }


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda p: p.pop("from"), "missing from"),
        (lambda p: p.pop("personalizations"), "missing personalizations"),
        (lambda p: p["personalizations"][0].pop("to"), "personalization without to"),
        (lambda p: p["personalizations"][0]["to"][0].update(email="nope"), "bad email"),
        (lambda p: p["personalizations"][0].update(custom_args="x"), "custom_args not object"),
        (lambda p: p.update(subject=""), "empty subject"),
        (lambda p: p["content"].reverse(), "html before text"),
        (lambda p: p.update(custom_args={"a": "b"}), "top-level custom_args (spec quirk)"),
    ],
)
def test_validator_rejects_bad_payloads(mutate: Any, why: str) -> None:
    payload = copy.deepcopy(build_sendgrid_payload(make_message(1)))
    mutate(payload)
    with pytest.raises(ValidationError):
        validate_sendgrid_payload(payload)


# -- without the published specs: skip on a fresh clone, fail where they are required --------


def _no_specs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, require: str) -> Path:
    missing = tmp_path / "no-shared" / "specs"
    monkeypatch.setitem(spec_schemas.SETTINGS, spec_schemas.SPECS_ENV, str(missing))
    monkeypatch.setitem(spec_schemas.SETTINGS, spec_schemas.SENDGRID_SPEC_ENV, "")
    monkeypatch.setitem(spec_schemas.SETTINGS, spec_schemas.REQUIRE_ENV, require)
    return missing


@pytest.mark.parametrize(
    ("require", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_a_missing_spec_skips_or_fails_when_required_naming_the_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, require: str, outcome: type[BaseException]
) -> None:
    missing = _no_specs(monkeypatch, tmp_path, require)
    for provider in ("postmark", "resend", "sendgrid"):
        with pytest.raises(outcome, match=re.escape(f"published specs not found at {missing}")):
            spec_schemas.require_spec(provider)
    with pytest.raises(outcome, match="NUDGE_REQUIRE_SPECS"):
        spec_schemas.validate_request_body("postmark", [])


def test_the_sendgrid_spec_override_is_honoured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_specs(monkeypatch, tmp_path, "")
    override = tmp_path / "mail.json"
    monkeypatch.setitem(spec_schemas.SETTINGS, spec_schemas.SENDGRID_SPEC_ENV, str(override))
    assert spec_schemas.spec_path("sendgrid") == override
    with pytest.raises(pytest.skip.Exception, match=re.escape(str(override))):
        spec_schemas.require_spec("sendgrid")
    override.write_text("{}")
    assert spec_schemas.require_spec("sendgrid") == override


@pytest.mark.parametrize("validate", [True, ["sendgrid", "webhook"]])
def test_without_specs_the_server_checks_only_the_webhook_contract(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sleeps: SleepRecorder,
    validate: bool | list[str],
) -> None:
    _no_specs(monkeypatch, tmp_path, "")
    with EspServer(api_key=API_KEY, validate=validate) as server:
        assert server.validated_dialects == {"webhook"}
        with make_provider(server.url, sleeps) as provider:
            assert provider.send([make_message(1)])[0].status == "sent"
        assert server.schema_violations == []


def test_when_specs_are_required_a_server_validating_that_dialect_fails_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = _no_specs(monkeypatch, tmp_path, "1")
    server = EspServer(validate=["sendgrid"])
    with pytest.raises(pytest.fail.Exception, match=re.escape(str(missing))):
        server.start()
    server.stop()
    # A server checking only our own webhook contract needs no published spec.
    with EspServer(validate=["webhook"]) as webhook_only:
        assert webhook_only.validated_dialects == {"webhook"}
    with EspServer(validate=True) as lenient:
        assert lenient.validated_dialects == {"webhook"}


# -- retries -------------------------------------------------------------------------------


def test_429_honours_retry_after_then_sends(
    server: EspServer, provider: SendGridProvider, sleeps: SleepRecorder
) -> None:
    server.script([Reply(status=429, retry_after="1"), 202])

    (result,) = provider.send([make_message(1)])

    assert result.status == "sent"
    # A 429 is the provider asking us to come back later, not a failed attempt.
    assert result.attempts == 1
    assert result.error is None
    assert sleeps.calls == pytest.approx([1.0], abs=0.01)
    assert server.received_send_ids() == ["send-0001", "send-0001"]


def test_429_asking_for_longer_than_max_rate_limit_wait_fails_retryable_at_once(
    server: EspServer, provider: SendGridProvider, sleeps: SleepRecorder
) -> None:
    server.script([Reply(status=429, retry_after="3600"), 202])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", True, 0)
    assert result.error is not None and result.error.startswith("HTTP 429: too many requests;")
    assert "more than max_rate_limit_wait=60s" in result.error
    assert sleeps.calls == []
    # The provider said "not for an hour": later sends of this run fail fast, unsent.
    (later,) = provider.send([make_message(2)])
    assert (later.status, later.retryable) == ("failed", True)
    assert len(server.send_requests()) == 1


def test_429_with_http_date_retry_after(
    server: EspServer, provider: SendGridProvider, sleeps: SleepRecorder
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=3)
    server.script([Reply(status=429, retry_after=format_datetime(when, usegmt=True)), 202])
    (result,) = provider.send([make_message(1)])
    assert result.status == "sent"
    assert len(sleeps.calls) == 1
    assert 1.0 <= sleeps.calls[0] <= 3.0  # HTTP-dates have one-second resolution


def test_429_without_retry_after_falls_back_to_backoff(
    server: EspServer, provider: SendGridProvider, sleeps: SleepRecorder
) -> None:
    server.script([429, 202])
    (result,) = provider.send([make_message(1)])
    assert result.status == "sent"
    assert sleeps.calls == pytest.approx([0.5], abs=0.01)


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 2.5 ", now=now) == 2.5
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0  # in the past
    assert parse_retry_after("-5", now=now) == 0.0
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk, now=now) is None


def test_500_then_202_is_sent(
    server: EspServer, provider: SendGridProvider, sleeps: SleepRecorder
) -> None:
    server.script([500, 202])
    (result,) = provider.send([make_message(1)])
    assert result.status == "sent"
    assert result.attempts == 2
    assert sleeps.calls == [0.5]


def test_backoff_is_jittered_within_half_to_full_ceiling(server: EspServer) -> None:
    sleeps = SleepRecorder()
    server.script([500, 500, 500, 202])
    with make_provider(server.url, sleeps, max_attempts=4, jitter=lambda: 0.0) as p:
        (result,) = p.send([make_message(1)])
    assert result.status == "sent"
    assert sleeps.calls == [0.25, 0.5, 1.0]  # bottom of the range: half of 0.5, 1, 2


def test_a_read_timeout_is_unknown_and_never_resent(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    # The server got the request and is slow to answer: it may well accept it. SendGrid has no
    # idempotency key, so retrying could deliver the email twice; the send is left 'unknown'.
    server.script([Reply(delay=TIMEOUT * 3), 202])

    with make_provider(server.url, sleeps, timeout=TIMEOUT) as provider:
        started = time.monotonic()
        (result,) = provider.send([make_message(1)])
        elapsed = time.monotonic() - started

    assert result.status == "unknown"
    assert result.attempts == 1
    assert result.error is not None and result.error.startswith("ReadTimeout")
    assert "not retried" in result.error
    assert len(server.send_requests()) == 1
    assert sleeps.calls == []
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT * 3  # gave up on the slow answer, did not wait


def test_400_fails_at_once_with_the_providers_message(
    server: EspServer, provider: SendGridProvider, sleeps: SleepRecorder
) -> None:
    server.script(
        [
            Reply(
                status=400,
                errors=[
                    {
                        "message": "The from address does not match a verified Sender Identity.",
                        "field": "from",
                    },
                    {"message": "Invalid subject.", "field": None},
                ],
            )
        ]
    )

    (result,) = provider.send([make_message(1)])

    assert result.status == "failed"
    assert result.retryable is False  # the provider said no: permanent
    assert result.attempts == 1
    assert result.error == (
        "HTTP 400: The from address does not match a verified Sender Identity. (field: from); "
        "Invalid subject."
    )
    assert len(server.send_requests()) == 1
    assert sleeps.calls == []


def test_non_json_error_body_falls_back_to_status_and_truncated_body(
    server: EspServer, provider: SendGridProvider
) -> None:
    server.script([Reply(status=413, body="<html>" + "x" * 1000 + "</html>")])
    (result,) = provider.send([make_message(1)])
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("HTTP 413: <html>xxx")
    assert result.error.endswith("...")
    assert len(result.error) < 350


def test_persistent_500_fails_after_max_attempts(
    server: EspServer, provider: SendGridProvider, sleeps: SleepRecorder
) -> None:
    server.set_default(500)

    (result,) = provider.send([make_message(1)])

    assert result.status == "failed"
    assert result.retryable is True  # nothing delivered, transient: a later tick retries
    assert result.attempts == 3
    assert result.error == "HTTP 500: Internal Server Error"
    assert len(server.send_requests()) == 3
    assert sleeps.calls == [0.5, 1.0]  # no wait after the last attempt


def test_connection_refused_is_retried_then_fails(sleeps: SleepRecorder) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port any more.
    with make_provider(f"http://127.0.0.1:{port}", sleeps) as p:
        (result,) = p.send([make_message(1)])
    assert result.status == "failed"
    assert result.retryable is True
    assert result.attempts == 3
    assert result.error is not None and result.error.startswith("ConnectError")
    assert len(sleeps.calls) == 2


def test_one_bad_message_in_a_batch_fails_alone(
    server: EspServer, provider: SendGridProvider
) -> None:
    messages = [make_message(n) for n in range(1, 7)]
    server.script(
        [bad_request("Does not contain a valid address.", "personalizations.0.to.0")],
        send_id="send-0004",
    )

    results = provider.send(messages)

    assert [r.send_id for r in results] == [m.send_id for m in messages]  # input order
    assert [r.status for r in results] == ["sent"] * 3 + ["failed"] + ["sent"] * 2
    assert results[3].error is not None
    assert "Does not contain a valid address." in results[3].error
    assert sorted(server.received_send_ids()) == sorted(m.send_id for m in messages)


# -- secrets and personal data -------------------------------------------------------------


def test_api_key_never_leaks_into_errors_repr_or_logs(
    server: EspServer, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    server.script([bad_request(f"echoing your header: Bearer {API_KEY}")], send_id="send-0001")
    server.script([500, 500, 500], send_id="send-0002")
    server.script([Reply(delay=TIMEOUT * 2)] * 2, send_id="send-0003")
    server.script([Reply(status=429, retry_after="0")] * 2, send_id="send-0004")

    with make_provider(server.url, sleeps, max_attempts=2, timeout=TIMEOUT) as p:
        results = p.send([make_message(n) for n in range(1, 6)])
        text = repr(p) + str(p)

    # send-0004's two 429s are waits, not attempts: it is sent on its third request.
    assert [r.status for r in results] == ["failed", "failed", "unknown", "sent", "sent"]
    # A server that echoes the key back (some proxies do) still cannot make us leak it.
    assert results[0].error is not None and "[REDACTED]" in results[0].error
    # Wrong key: SendGrid's 401 is a non-retryable failure.
    with SendGridProvider(
        "SG.wrong-key", server.url, timeout=TIMEOUT, max_concurrency=1, max_attempts=3
    ) as wrong:
        (unauthorized,) = wrong.send([make_message(6)])
    assert unauthorized.status == "failed" and unauthorized.attempts == 1
    assert unauthorized.error is not None and "authorization grant is invalid" in unauthorized.error

    everything = [r.error or "" for r in [*results, unauthorized]]
    everything += [text, caplog.text]
    everything += [str(rec.args) for rec in caplog.records]
    assert caplog.records, "expected retry/failure log lines"
    for blob in everything:
        assert API_KEY not in blob
        assert "unit-test-secret" not in blob
    assert "api_key=<hidden>" in repr(p)
    # Recipients are masked in our log lines.
    assert "customer1@example.com" not in caplog.text
    assert "c***@e***.com" in caplog.text


def test_config_errors_do_not_echo_the_key() -> None:
    for bad_key in ("", "   ", "SG.abc\ndef", "SG.abc def", "SG.clé"):
        with pytest.raises(ProviderConfigError) as info:
            SendGridProvider(
                bad_key, "https://api.sendgrid.com", timeout=1, max_concurrency=1, max_attempts=1
            )
        if bad_key.strip():
            assert bad_key.strip() not in str(info.value)
    with pytest.raises(ProviderConfigError, match="http"):
        SendGridProvider(API_KEY, "ftp://x", timeout=1, max_concurrency=1, max_attempts=1)
    with pytest.raises(ProviderConfigError, match="max_concurrency"):
        SendGridProvider(API_KEY, "https://x", timeout=1, max_concurrency=0, max_attempts=1)


# -- concurrency and lifecycle -------------------------------------------------------------


def test_concurrency_is_bounded(sleeps: SleepRecorder) -> None:
    with (
        EspServer(api_key=API_KEY, default=Reply(delay=0.1)) as server,
        make_provider(server.url, sleeps, max_concurrency=2) as p,
    ):
        results = p.send([make_message(n) for n in range(1, 7)])
    assert all(r.status == "sent" for r in results)
    # Never more than two at once, and really two at once (not accidentally serial).
    assert server.max_in_flight == 2
    assert server.errors == []


def test_connections_are_reused_across_messages(server: EspServer, sleeps: SleepRecorder) -> None:
    with make_provider(server.url, sleeps, max_concurrency=1) as p:
        results = p.send([make_message(n) for n in range(1, 6)])
    assert all(r.status == "sent" for r in results)
    # One worker, one shared client: every request rode the same keep-alive connection.
    assert len(server.send_requests()) == 5
    assert len({r.client_port for r in server.send_requests()}) == 1


def test_send_after_close_raises_and_close_is_idempotent(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    p = make_provider(server.url, sleeps)
    p.close()
    p.close()
    with pytest.raises(ProviderError):
        p.send([make_message(1)])


def test_empty_batch_sends_nothing(server: EspServer, provider: SendGridProvider) -> None:
    assert provider.send([]) == []
    assert server.requests == []


def test_injected_transport_is_used(sleeps: SleepRecorder) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, headers={"X-Message-Id": "mock-1"})

    with make_provider(
        "https://api.sendgrid.test", sleeps, transport=httpx.MockTransport(handler)
    ) as p:
        (result,) = p.send([make_message(1)])
    assert result.provider_message_id == "mock-1"
    assert str(seen[0].url) == "https://api.sendgrid.test/v3/mail/send"


# -- factory -------------------------------------------------------------------------------


def test_build_provider_sendgrid_requires_a_key() -> None:
    settings = Settings.from_env({"NUDGE_ESP": "sendgrid"})
    with pytest.raises(ProviderConfigError, match=r"^NUDGE_ESP_API_KEY is not set"):
        build_provider(settings.provider)


def test_build_provider_sendgrid(server: EspServer) -> None:
    settings = Settings.from_env(
        {"NUDGE_ESP": "SendGrid", "NUDGE_ESP_API_KEY": API_KEY, "NUDGE_ESP_BASE_URL": server.url}
    )
    provider = build_provider(
        replace(settings.provider, timeout=2.0, max_concurrency=2, max_attempts=2)
    )
    try:
        assert isinstance(provider, SendGridProvider)
        assert provider.name == "sendgrid"
        assert API_KEY not in repr(provider)
        (result,) = provider.send([make_message(1)])
        assert result.status == "sent"
    finally:
        provider.close()


# -- dynamic template mode: up to 1000 messages per request ---------------------------------


TEMPLATE_ID = "d-0123456789abcdef0123456789abcdef"


def make_template_provider(url: str, sleeps: SleepRecorder, **overrides: Any) -> SendGridProvider:
    return make_provider(url, sleeps, template_id=TEMPLATE_ID, **overrides)


def test_template_mode_sends_personalizations_matching_the_schema(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    with make_template_provider(server.url, sleeps) as p:
        assert p.limits.per_message_results is False
        results = p.send([make_message(n) for n in range(1, 6)])

    assert [r.status for r in results] == ["sent"] * 5
    assert len({r.provider_message_id for r in results}) == 1  # one X-Message-Id per request
    (request,) = server.send_requests()
    validate_sendgrid_payload(request.body)
    body = request.body
    assert body["template_id"] == TEMPLATE_ID
    assert body["from"] == {"email": "hello@nudge.example", "name": "Nudge Team"}
    assert "content" not in body and "subject" not in body
    assert body["personalizations"][0] == {
        "to": [{"email": "customer1@example.com"}],
        "custom_args": {"send_id": "send-0001", "trigger": "welcome", "step": "day0"},
        "dynamic_template_data": {
            "subject": "Welcome aboard #1 — café ☕",
            "html": "<p>Hello customer 1</p>",
            "text": "Hello customer 1",
        },
    }
    assert server.received_send_ids() == [f"send-000{n}" for n in range(1, 6)]


def test_template_mode_puts_each_recipients_unsubscribe_headers_on_their_personalization(
    start_esp: Callable[..., EspServer], sleeps: SleepRecorder
) -> None:
    server = start_esp(api_key=API_KEY, validate=["sendgrid"])
    messages = [
        make_message(1, headers=unsubscribe_headers(1)),
        make_message(2),
        make_message(3, headers=unsubscribe_headers(3)),
    ]
    with make_template_provider(server.url, sleeps) as p:
        results = p.send(messages)

    assert [r.status for r in results] == ["sent"] * 3
    (request,) = server.send_requests()
    validate_sendgrid_payload(request.body)
    assert "headers" not in request.body  # request-wide headers would go to everyone
    personalizations = {p["custom_args"]["send_id"]: p for p in request.body["personalizations"]}
    assert personalizations["send-0001"]["headers"] == unsubscribe_headers(1)
    assert personalizations["send-0003"]["headers"] == unsubscribe_headers(3)
    assert unsubscribe_headers(1) != unsubscribe_headers(3)  # one token per recipient
    assert "headers" not in personalizations["send-0002"]


def test_template_mode_splits_a_rejected_batch_to_isolate_the_bad_row(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    server.fail_message("send-0003", "Does not contain a valid address.")
    with make_template_provider(server.url, sleeps) as p:
        results = p.send([make_message(n) for n in range(1, 9)])

    assert [r.status for r in results] == ["sent"] * 2 + ["failed"] + ["sent"] * 5
    assert results[2].error == (
        "HTTP 400: Does not contain a valid address. (field: personalizations.0.to.0.email)"
    )
    assert results[2].retryable is False
    # 8 rejected -> 4 rejected -> 2 accepted, 2 rejected -> 1 rejected (the bad row), 1
    # accepted -> the other 4 accepted.
    sizes = [len(r.body["personalizations"]) for r in server.send_requests()]
    assert sizes == [8, 4, 2, 2, 1, 1, 4]
    assert results[2].attempts == 4
    assert server.duplicate_deliveries() == {}
    assert len(server.accepted_counts()) == 7


def test_template_mode_never_puts_one_address_or_two_senders_in_a_request(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    messages = [
        make_message(1),
        make_message(2, to_email="Customer1@Example.com"),  # same mailbox: SendGrid says 400
        make_message(3),
        make_message(4, from_email="other@nudge.example"),
    ]
    with make_template_provider(server.url, sleeps) as p:
        results = p.send(messages)
    assert [r.status for r in results] == ["sent"] * 4
    for request in server.send_requests():
        emails = [p["to"][0]["email"].lower() for p in request.body["personalizations"]]
        assert len(emails) == len(set(emails))
    assert sorted(len(r.body["personalizations"]) for r in server.send_requests()) == [1, 1, 2]


def test_template_mode_batches_hold_at_most_1000(server: EspServer, sleeps: SleepRecorder) -> None:
    with make_template_provider(server.url, sleeps) as p:
        results = p.send([make_message(n) for n in range(1, 1002)])
    assert all(r.status == "sent" for r in results)
    sizes = sorted(len(r.body["personalizations"]) for r in server.send_requests())
    assert sizes == [1, 1000]


def test_template_mode_read_timeout_leaves_the_batch_unknown(
    server: EspServer, sleeps: SleepRecorder
) -> None:
    server.script([Reply(delay=TIMEOUT * 2)])
    with make_template_provider(server.url, sleeps, timeout=TIMEOUT) as p:
        results = p.send([make_message(n) for n in range(1, 4)])
    assert {r.status for r in results} == {"unknown"}
    assert len(server.send_requests()) == 1


def test_template_id_must_be_a_dynamic_template() -> None:
    with pytest.raises(ProviderConfigError, match="dynamic template id starting with 'd-'"):
        SendGridProvider(API_KEY, "https://api.sendgrid.com", template_id="1234")
    with SendGridProvider(API_KEY, template_id="  ") as p:
        assert p.template_id is None
        assert p.base_url == "https://api.sendgrid.com"


@pytest.mark.parametrize(
    "value",
    [
        "ann@example.com",
        "Ann <ann@example.com>",
        '"Lee, Ann" <ann@example.com>',
        "ann@example.com (Ann)",
        "ann@example.com, bob@example.com",
        " ann@example.com",
        "<ann@example.com>",
        "a@b@example.com",
        "ann;x@example.com",
        "ann@[192.0.2.1]",
        "ann@example.com\r\nBcc: victim@example.com",
        "änn@example.com",
        "not an address",
        "",
    ],
)
def test_the_bare_address_shortcut_reads_addresses_as_parseaddr_does(value: str) -> None:
    from email.utils import parseaddr

    from dagster_project.providers.sendgrid import _split_address

    assert _split_address(value) == parseaddr(value)


def test_the_bare_address_shortcut_agrees_with_parseaddr_on_random_strings() -> None:
    import random
    from email.utils import parseaddr

    from dagster_project.providers.sendgrid import _BARE_ADDRESS, _split_address

    rng = random.Random(8058)
    alphabet = 'abc.@<>"(),;:[]\\ \t\r\n+-_é'

    def part() -> str:
        # Mostly plain characters, so a good share of the strings look like an address.
        return "".join(
            rng.choice(alphabet) if rng.random() < 0.15 else rng.choice("abc.")
            for _ in range(rng.randint(0, 6))
        )

    shortcut = 0
    for _ in range(20_000):
        value = f"{part()}@{part()}" if rng.random() < 0.9 else part()
        shortcut += bool(_BARE_ADDRESS.fullmatch(value))
        assert _split_address(value) == parseaddr(value), value
    assert shortcut > 2_000  # the shortcut itself was exercised, not only parseaddr
