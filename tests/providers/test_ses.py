"""The SES adapter against an SES v2 emulator and a scripted SES stand-in, both on loopback.

The contract tests send real SigV4-signed requests to moto's server (``moto[server]``, run in
this process by ``tests/ses_emulator.py``) and read back what it stored through its
``/moto-api/`` introspection API. moto does not check signatures and keeps neither tags, the
configuration set, custom headers nor the text part of an HTML email, so those are checked on
:class:`SesStubServer` (signatures by an independent SigV4 implementation), which also scripts
SES's error answers. Waits go through a fake clock, so backoff and rate limiting are asserted
without sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dagster_project.providers.base import ProviderConfigError, ProviderError
from dagster_project.providers.ses import (
    SesProvider,
    build_ses_payload,
    classify_ses_error,
)
from tests.support.factories import PATIENT_TIMEOUT, make_message, unsubscribe_headers
from tests.support.ses_emulator import (
    SesEmulator,
    SesReply,
    SesStubServer,
    free_port,
    send_email_violations,
)

ACCESS_KEY = "AKIDEXAMPLE0NUDGE0TEST"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYsecretEXAMPLE"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKENvalue0123456789"
REGION = "eu-west-1"
# The short timeout the read-timeout test asks for; every other provider keeps the patient
# default, since on a loaded 2-core machine a slow answer (moto's first above all) would read as
# "may have been accepted" in a test about something else.
TIMEOUT = 0.3


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it; records each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def make_provider(endpoint_url: str, clock: FakeClock, **overrides: Any) -> SesProvider:
    kwargs: dict[str, Any] = {
        "region": REGION,
        "endpoint_url": endpoint_url,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "timeout": PATIENT_TIMEOUT,
        "max_concurrency": 4,
        "max_attempts": 3,
        "requests_per_second": None,
        "backoff_base": 0.5,
        "backoff_max": 5.0,
        "sleep": clock.sleep,
        "clock": clock,
        "jitter": lambda: 1.0,  # top of the jitter range: waits are exactly the ceiling
    }
    kwargs.update(overrides)
    return SesProvider(**kwargs)


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer's AWS profile, keys or instance role must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stub() -> Iterator[SesStubServer]:
    with SesStubServer() as server:
        yield server
        assert server.errors == []


@pytest.fixture
def provider(stub: SesStubServer, clock: FakeClock) -> Iterator[SesProvider]:
    with make_provider(stub.url, clock) as p:
        yield p


# -- the contract: real signed sends to the SES v2 emulator -------------------------------


def test_every_message_reaches_the_emulator_exactly_once(
    ses_emulator: SesEmulator, clock: FakeClock
) -> None:
    messages = [make_message(n) for n in range(1, 7)]
    messages.append(make_message(7, html="", from_email="plain@nudge.example"))  # text-only

    with make_provider(ses_emulator.url, clock, configuration_set="nudge-events") as provider:
        results = provider.send(messages)

    assert [r.status for r in results] == ["sent"] * 7
    assert [r.attempts for r in results] == [1] * 7
    stored = {e.message_id: e for e in ses_emulator.emails()}
    assert len(stored) == 7  # nothing sent twice, nothing else
    assert sorted(stored) == sorted(r.provider_message_id or "" for r in results)
    for message, result in zip(messages, results, strict=True):
        email = stored[result.provider_message_id or ""]  # the MessageId SES answered
        assert email.to == [message.to_email]
        assert email.source == message.from_email
        assert email.subject == message.subject
        assert email.body == (message.html or message.text)  # moto keeps one part


def test_credentials_from_the_environment_reach_the_emulator(
    ses_emulator: SesEmulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    provider = SesProvider(
        region=None,
        endpoint_url=ses_emulator.url,
        requests_per_second=None,
        timeout=PATIENT_TIMEOUT,
    )
    with provider:
        (result,) = provider.send([make_message(42)])
    assert result.status == "sent"
    assert [e.message_id for e in ses_emulator.emails()] == [result.provider_message_id]


def test_unverified_sender_is_refused_by_the_emulator_and_not_retried(
    ses_emulator: SesEmulator, clock: FakeClock
) -> None:
    messages = [make_message(1, from_email="News <news@unverified.example>"), make_message(2)]
    with make_provider(ses_emulator.url, clock) as provider:
        refused, sent = provider.send(messages)

    # SES's own answer, as the emulator sends it: 400 MessageRejected, a permanent failure.
    assert (refused.status, refused.retryable, refused.attempts) == ("failed", False, 1)
    assert (refused.error or "").startswith("HTTP 400 MessageRejected: ")
    assert "news@unverified.example" not in (refused.error or "")  # addresses masked
    assert clock.sleeps == []
    assert sent.status == "sent"  # one refused message does not stop the others
    assert [e.to for e in ses_emulator.emails()] == [["customer2@example.com"]]


def test_clearing_the_emulator_empties_its_store_and_keeps_the_sender_verified(
    ses_emulator: SesEmulator, clock: FakeClock
) -> None:
    with make_provider(ses_emulator.url, clock) as provider:
        assert provider.send([make_message(1)])[0].status == "sent"
        assert len(ses_emulator.emails()) == 1
        ses_emulator.clear()
        assert ses_emulator.emails() == []
        (again,) = provider.send([make_message(2)])
    assert again.status == "sent"
    assert [e.message_id for e in ses_emulator.emails()] == [again.provider_message_id]


class RecordingTransport(httpx.HTTPTransport):
    """The real transport, keeping every JSON body it sends: moto keeps no custom headers, so
    this is how a test sees what reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[Any] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.read()))
        return super().handle_request(request)


def test_unsubscribe_headers_reach_the_emulator_as_simple_content_headers(
    ses_emulator: SesEmulator, clock: FakeClock
) -> None:
    transport = RecordingTransport()
    messages = [make_message(1, headers=unsubscribe_headers(1)), make_message(2)]
    with make_provider(ses_emulator.url, clock, transport=transport) as provider:
        results = provider.send(messages)

    # moto takes Content.Simple.Headers (and stores the emails), as SES v2 does.
    assert [r.status for r in results] == ["sent", "sent"]
    stored = sorted(e.message_id for e in ses_emulator.emails())
    assert stored == sorted(r.provider_message_id or "" for r in results)
    bodies = {b["Content"]["Simple"]["Headers"][0]["Value"]: b for b in transport.bodies}
    assert bodies["send-0001"]["Content"]["Simple"]["Headers"] == [
        {"Name": "X-Nudge-Send-Id", "Value": "send-0001"},
        {"Name": "List-Unsubscribe", "Value": unsubscribe_headers(1)["List-Unsubscribe"]},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
    ]
    assert bodies["send-0002"]["Content"]["Simple"]["Headers"] == [
        {"Name": "X-Nudge-Send-Id", "Value": "send-0002"}
    ]
    assert "Raw" not in bodies["send-0001"]["Content"]
    for body in bodies.values():
        assert send_email_violations(body) == []  # SES v2's published model


def test_a_header_with_a_line_break_fails_its_message_alone_without_a_request(
    ses_emulator: SesEmulator, clock: FakeClock
) -> None:
    injected = {"List-Unsubscribe": "<https://x.example/u/1>\r\nBcc: victim@example.com"}
    with make_provider(ses_emulator.url, clock) as provider:
        refused, sent = provider.send([make_message(1, headers=injected), make_message(2)])

    assert (refused.status, refused.attempts, refused.retryable) == ("failed", 0, False)
    assert "List-Unsubscribe has a line break (CR or LF)" in (refused.error or "")
    assert sent.status == "sent"
    assert [e.to for e in ses_emulator.emails()] == [["customer2@example.com"]]


def test_more_headers_than_ses_takes_fail_the_message_before_any_request() -> None:
    headers = {f"X-Extra-{i}": "x" for i in range(15)}  # 16 with X-Nudge-Send-Id
    with pytest.raises(ValueError, match="SES takes 14 besides X-Nudge-Send-Id"):
        build_ses_payload(make_message(1, headers=headers))
    del headers["X-Extra-0"]
    payload = build_ses_payload(make_message(1, headers=headers))
    assert send_email_violations(payload) == []
    payload["Content"]["Simple"]["Headers"].append({"Name": "X-Extra-0", "Value": "x"})
    assert send_email_violations(payload) == [
        "SendEmail.Content.Simple.Headers: 16 items, outside {'min': 0, 'max': 15}"
    ]
    with pytest.raises(ValueError, match="longer than SES allows"):
        build_ses_payload(make_message(1, headers={"X-Long": "x" * 996}))


# -- signing and payload (scripted stand-in) ----------------------------------------------


def _sigv4_signature(request: Any, secret: str, scope: str, signed: list[str]) -> str:
    """Recompute SigV4 from the request as received: an implementation independent of
    botocore, so a header httpx changed after signing, or a different body, would show."""
    canonical_headers = "".join(
        f"{name}:{' '.join(request.headers[name].split())}\n" for name in signed
    )
    canonical_request = "\n".join(
        [
            request.method,
            request.path,
            request.query,
            canonical_headers,
            ";".join(signed),
            hashlib.sha256(request.raw).hexdigest(),
        ]
    )
    amz_date = request.headers["x-amz-date"]
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret).encode()
    for part in scope.split("/")[:4]:
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("token", [None, SESSION_TOKEN])
def test_requests_carry_a_valid_sigv4_signature_for_ses_in_the_region(
    stub: SesStubServer, clock: FakeClock, token: str | None
) -> None:
    with make_provider(stub.url, clock, session_token=token) as provider:
        assert provider.send([make_message(1)])[0].status == "sent"

    (request,) = stub.requests
    assert request.path == "/v2/email/outbound-emails"
    algorithm, _, fields = request.headers["authorization"].partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256"
    parts = dict(p.strip().split("=", 1) for p in fields.split(","))
    access_key, scope = parts["Credential"].split("/", 1)
    assert access_key == ACCESS_KEY
    date, region, service, terminator = scope.split("/")
    assert (region, service, terminator) == (REGION, "ses", "aws4_request")
    assert request.headers["x-amz-date"].startswith(date)
    signed = parts["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "content-type"} <= set(signed)
    if token:
        assert request.headers["x-amz-security-token"] == token
        assert "x-amz-security-token" in signed
    else:
        assert "x-amz-security-token" not in request.headers
    assert parts["Signature"] == _sigv4_signature(request, SECRET_KEY, scope, signed)


def test_payload_is_ses_v2_simple_content_with_tags(stub: SesStubServer, clock: FakeClock) -> None:
    message = make_message(
        1,
        from_email="Équipe Nudge <hello@nudge.example>",
        custom_args={"send_id": "send-0001", "variant": "b v2", "campaign": "spring.sale@2"},
    )
    with make_provider(stub.url, clock, configuration_set="nudge-events") as provider:
        provider.send([message])

    body = stub.requests[0].json
    assert body["FromEmailAddress"] == "=?utf-8?q?=C3=89quipe_Nudge?= <hello@nudge.example>"
    assert body["Destination"] == {"ToAddresses": ["customer1@example.com"]}
    simple = body["Content"]["Simple"]
    assert simple["Subject"] == {"Data": message.subject, "Charset": "UTF-8"}
    assert simple["Body"] == {
        "Text": {"Data": message.text, "Charset": "UTF-8"},
        "Html": {"Data": message.html, "Charset": "UTF-8"},
    }
    assert simple["Headers"] == [{"Name": "X-Nudge-Send-Id", "Value": "send-0001"}]
    assert body["ConfigurationSetName"] == "nudge-events"
    assert send_email_violations(body) == []
    # Ledger keys first; characters SES refuses in tags become "_".
    assert body["EmailTags"] == [
        {"Name": "send_id", "Value": "send-0001"},
        {"Name": "trigger", "Value": "welcome"},
        {"Name": "step", "Value": "day0"},
        {"Name": "variant", "Value": "b_v2"},
        {"Name": "campaign", "Value": "spring_sale_2"},
    ]


def test_no_configuration_set_means_no_field() -> None:
    payload = build_ses_payload(make_message(1))
    assert "ConfigurationSetName" not in payload
    assert payload["FromEmailAddress"] == "Nudge Team <hello@nudge.example>"


def test_unsendable_messages_fail_without_a_request(
    stub: SesStubServer, provider: SesProvider
) -> None:
    results = provider.send(
        [
            make_message(1, html="", text=""),
            make_message(2, to_email="not-an-address"),
            make_message(3, subject=""),
        ]
    )
    assert [(r.status, r.attempts, r.retryable) for r in results] == [("failed", 0, False)] * 3
    assert stub.requests == []


def test_requests_reuse_pooled_connections(stub: SesStubServer, clock: FakeClock) -> None:
    with make_provider(stub.url, clock, max_concurrency=2) as provider:
        results = provider.send([make_message(n) for n in range(10)])
    assert {r.status for r in results} == {"sent"}
    assert len({r.client_port for r in stub.requests}) <= 2


# -- error classification ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, "TooManyRequestsException", "rate_limited"),
        (400, "LimitExceededException", "rate_limited"),
        (400, "Throttling", "rate_limited"),
        (429, "", "rate_limited"),
        (500, "InternalFailure", "transient"),
        (503, "", "transient"),
        (400, "MessageRejected", "permanent"),
        (400, "MailFromDomainNotVerifiedException", "permanent"),
        (400, "AccountSuspendedException", "permanent"),
        (400, "BadRequestException", "permanent"),
        (404, "NotFoundException", "permanent"),
        (403, "UnrecognizedClientException", "fatal"),
        (403, "InvalidSignatureException", "fatal"),
        (403, "ExpiredTokenException", "fatal"),
    ],
)
def test_error_classification(status: int, code: str, expected: str) -> None:
    assert classify_ses_error(status, code) == expected


def test_throttling_pauses_every_worker_and_is_not_an_attempt(
    stub: SesStubServer, provider: SesProvider, clock: FakeClock
) -> None:
    stub.script(
        [
            SesReply(429, "TooManyRequestsException", "Maximum sending rate exceeded."),
            SesReply(400, "LimitExceededException", "Too many requests."),
            200,
        ]
    )
    (result,) = provider.send([make_message(1)])

    assert result.status == "sent"
    assert result.attempts == 1  # the two throttled requests are waits, not attempts
    assert len(stub.requests) == 3
    assert clock.sleeps == [0.5, 1.0]  # exponential backoff through the shared limiter


def test_throttling_that_never_ends_fails_retryable(stub: SesStubServer, clock: FakeClock) -> None:
    stub.script([SesReply(429, "TooManyRequestsException", "Maximum sending rate exceeded.")] * 3)
    with make_provider(stub.url, clock, max_throttle_retries=2) as provider:
        (result,) = provider.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", True, 1)
    assert "TooManyRequestsException" in (result.error or "")
    assert len(stub.requests) == 3


def test_5xx_is_retried_with_backoff_then_fails_retryable(
    stub: SesStubServer, provider: SesProvider, clock: FakeClock
) -> None:
    stub.script([SesReply(500, "InternalFailure", "Internal failure")] * 3)
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", True, 3)
    assert result.error == "HTTP 500 InternalFailure: Internal failure"
    assert clock.sleeps == [0.5, 1.0]
    assert len(stub.requests) == 3


def test_5xx_then_success_is_sent(
    stub: SesStubServer, provider: SesProvider, clock: FakeClock
) -> None:
    stub.script([SesReply(503, "ServiceUnavailable", "Service Unavailable"), 200])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("sent", 2)
    assert result.provider_message_id and result.provider_message_id.startswith("stub-")


@pytest.mark.parametrize(
    ("code", "aws_message"),
    [
        ("MessageRejected", "Email address is not verified: customer1@example.com"),
        ("MailFromDomainNotVerifiedException", "MAIL FROM domain is not verified."),
        ("AccountSuspendedException", "Your account has been suspended."),
        ("BadRequestException", "Missing final '@domain'"),
    ],
)
def test_rejections_are_permanent_with_aws_words(
    stub: SesStubServer, provider: SesProvider, clock: FakeClock, code: str, aws_message: str
) -> None:
    stub.script([SesReply(400, code, aws_message)])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", False, 1)
    assert result.error is not None and result.error.startswith(f"HTTP 400 {code}: ")
    assert "customer1@example.com" not in result.error  # addresses masked
    assert len(stub.requests) == 1
    assert clock.sleeps == []


def test_read_timeout_is_unknown_and_never_resent(stub: SesStubServer, clock: FakeClock) -> None:
    stub.script([SesReply(delay=TIMEOUT * 4)])
    with make_provider(stub.url, clock, timeout=TIMEOUT) as provider:
        (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("unknown", 1)
    assert "ReadTimeout" in (result.error or "")
    assert len(stub.requests) == 1


def test_dropped_response_is_unknown_and_never_resent(
    stub: SesStubServer, provider: SesProvider
) -> None:
    stub.script([SesReply(drop=True)])
    (result,) = provider.send([make_message(1)])
    assert result.status == "unknown"
    assert len(stub.requests) == 1


def test_an_answer_that_cannot_be_read_is_unknown_and_never_resent(
    stub: SesStubServer, provider: SesProvider
) -> None:
    # SES took the request; httpx fails decoding the answer. Calling that 'failed' would tell
    # the ledger nothing went out when the email may well be in the inbox.
    stub.script([SesReply(garbled=True)])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("unknown", 1)
    assert "DecodingError" in (result.error or "")
    assert len(stub.requests) == 1


def test_connection_refused_is_retried_then_fails_retryable(clock: FakeClock) -> None:
    with make_provider(f"http://127.0.0.1:{free_port()}", clock) as provider:
        (result,) = provider.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", True, 3)
    assert "ConnectError" in (result.error or "")


def test_rejected_credentials_stop_the_batch_retryable(
    stub: SesStubServer, clock: FakeClock
) -> None:
    stub.script([SesReply(403, "UnrecognizedClientException", "The security token is invalid.")])
    with make_provider(stub.url, clock, max_concurrency=1) as provider:
        results = provider.send([make_message(n) for n in range(5)])
    assert [r.status for r in results] == ["failed"] * 5
    assert all(r.retryable for r in results)
    assert [r.attempts for r in results] == [1, 0, 0, 0, 0]
    assert len(stub.requests) == 1  # one request found out; the others were not sent


def test_one_bad_message_does_not_stop_the_batch() -> None:
    # MockTransport only for this edge case: which message fails must not depend on timing.
    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["Destination"]["ToAddresses"] == ["customer2@example.com"]:
            return httpx.Response(
                400,
                json={"message": "Illegal address"},
                headers={"x-amzn-ErrorType": "MessageRejected:"},
            )
        return httpx.Response(200, json={"MessageId": "m-" + request.headers["x-amz-date"]})

    clock = FakeClock()
    with make_provider(
        "https://email.eu-west-1.amazonaws.com", clock, transport=httpx.MockTransport(handler)
    ) as p:
        results = p.send([make_message(n) for n in range(1, 5)])
    assert [r.status for r in results] == ["sent", "failed", "sent", "sent"]
    assert results[1].error == "HTTP 400 MessageRejected: Illegal address"


def test_rate_limit_spaces_requests(stub: SesStubServer, clock: FakeClock) -> None:
    with make_provider(stub.url, clock, requests_per_second=2.0, max_concurrency=1) as provider:
        results = provider.send([make_message(n) for n in range(6)])
    assert {r.status for r in results} == {"sent"}
    # A burst of 2, then one request every 0.5 s of (fake) time.
    assert sum(clock.sleeps) == pytest.approx(2.0)


def test_send_after_close_raises(provider: SesProvider) -> None:
    provider.close()
    provider.close()  # twice is fine
    with pytest.raises(ProviderError):
        provider.send([make_message(1)])


# -- configuration and secrets -----------------------------------------------------------


def test_missing_credentials_is_a_config_error() -> None:
    with pytest.raises(ProviderConfigError, match="AWS_ACCESS_KEY_ID"):
        SesProvider(region=REGION)


def test_a_missing_profile_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ProviderConfigError, match="ProfileNotFound"):
        SesProvider(region=REGION)


def test_missing_region_is_a_config_error() -> None:
    with pytest.raises(ProviderConfigError, match="AWS_REGION"):
        SesProvider(region=None, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)


def test_region_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    with SesProvider(region=None, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY) as p:
        assert p.region == "ap-southeast-2"
        assert p.endpoint_url == "https://email.ap-southeast-2.amazonaws.com"
        assert p.limits.idempotent is False
        assert p.limits.requests_per_second == 14.0


KEYS = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"access_key_id": ACCESS_KEY}, "incomplete"),
        ({"secret_access_key": SECRET_KEY}, "incomplete"),
        ({"access_key_id": ACCESS_KEY, "secret_access_key": "bad secret"}, "whitespace"),
        ({**KEYS, "session_token": "tok\nen"}, "session token"),
        ({**KEYS, "region": "us-east-1/../x"}, "not a region"),
        ({**KEYS, "endpoint_url": "ftp://example.com"}, "http"),
        ({**KEYS, "max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_bad_configuration_is_refused_without_echoing_secrets(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ProviderConfigError, match=match) as info:
        SesProvider(**{"region": REGION, **kwargs})
    for secret in (SECRET_KEY, "bad secret", "tok\nen"):
        assert secret not in str(info.value)


def test_secrets_stay_out_of_repr_errors_and_logs(
    stub: SesStubServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # botocore logs the canonical request at DEBUG
    stub.script([SesReply(400, "MessageRejected", f"echo {SECRET_KEY} and {SESSION_TOKEN}")])
    with make_provider(stub.url, clock, session_token=SESSION_TOKEN) as provider:
        assert SECRET_KEY not in repr(provider) and SESSION_TOKEN not in repr(provider)
        assert ACCESS_KEY not in repr(provider)
        (result,) = provider.send([make_message(1)])

    assert result.status == "failed"
    assert SECRET_KEY not in (result.error or "") and SESSION_TOKEN not in (result.error or "")
    assert "[REDACTED]" in (result.error or "")
    assert any("CanonicalRequest" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        text = record.getMessage()
        assert SECRET_KEY not in text
        assert SESSION_TOKEN not in text
        assert "customer1@example.com" not in text
