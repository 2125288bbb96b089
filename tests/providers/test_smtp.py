"""The SMTP adapter against a real aiosmtpd server on loopback (tests/smtp_server.py).

Waits between retries go through an injected recorder, so backoff is asserted without sleeping;
the only real wait is the 0.3 s client timeout of the "server never answers" case, which asks
for it; every other test keeps the patient default, so a loaded machine cannot turn a slow answer
into a timeout.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from dagster_project.providers.base import ProviderConfigError, ProviderError
from dagster_project.providers.smtp import SmtpProvider, build_mime_message, make_message_id
from tests.support.factories import (
    SleepRecorder,
    fast_tuning,
    make_message,
    unsubscribe_headers,
)
from tests.support.smtp_server import SmtpServer, free_port

TIMEOUT = 0.3  # only for the tests that wait a timeout out; the rest keep fast_tuning's patient one
USERNAME = "nudge-sender"
PASSWORD = "correct horse battery staple"


def make_provider(port: int, sleeps: SleepRecorder, **overrides: Any) -> SmtpProvider:
    return SmtpProvider(
        "127.0.0.1",
        port,
        **fast_tuning(
            sleeps,
            **{"starttls": False, "max_concurrency": 1, **overrides},
        ),
    )


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as srv:
        yield srv


@pytest.fixture
def provider(server: SmtpServer, sleeps: SleepRecorder) -> Iterator[SmtpProvider]:
    with make_provider(server.port, sleeps) as p:
        yield p


# -- the message ---------------------------------------------------------------------------


def test_message_is_multipart_alternative_with_the_expected_headers(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    message = make_message(1, from_email="Équipe Nudge <hello@nudge.example>")
    (result,) = provider.send([message])

    assert result.status == "sent"
    assert result.provider_message_id == "<send-0001@nudge.example>"
    (mail,) = server.received
    assert mail.mail_from == "hello@nudge.example"
    assert mail.rcpt_tos == ["customer1@example.com"]
    mime = mail.message
    assert mime.get_content_type() == "multipart/alternative"
    parts = list(mime.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().rstrip("\n") == message.text
    assert parts[1].get_content().rstrip("\n") == message.html
    assert str(mime["From"]) == "Équipe Nudge <hello@nudge.example>"
    assert str(mime["To"]) == "customer1@example.com"
    assert str(mime["Subject"]) == message.subject
    assert mime["Message-ID"] == "<send-0001@nudge.example>"
    assert mime["X-Nudge-Send-Id"] == "send-0001"
    assert parsedate_to_datetime(str(mime["Date"])).tzinfo is not None
    assert mime["List-Unsubscribe"] is None  # only a message given headers carries one
    assert mail.data.isascii()  # quoted-printable/encoded words: no 8BITMIME needed


def test_unsubscribe_headers_arrive_exactly_as_given_and_only_on_their_message(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    headers = unsubscribe_headers(1)
    results = provider.send([make_message(1, headers=headers), make_message(2)])

    assert [r.status for r in results] == ["sent", "sent"]
    received = {m.rcpt_tos[0]: m for m in server.received}
    with_headers = received["customer1@example.com"]
    for name, value in headers.items():
        assert with_headers.message.get_all(name) == [value]
        # On the wire too: folded only at a space, never RFC 2047-encoded (mail clients do
        # not decode encoded words in List-Unsubscribe, and one-click would break).
        raw = email.message_from_bytes(with_headers.data, policy=email.policy.compat32)
        raw_values = raw.get_all(name) or []
        assert [re.sub(r"\r?\n(?=[ \t])", "", v) for v in raw_values] == [value]
    assert max(len(line) for line in with_headers.data.split(b"\r\n")) <= 998
    without = received["customer2@example.com"].message
    assert without["List-Unsubscribe"] is None
    assert without["List-Unsubscribe-Post"] is None


def test_a_header_with_a_line_break_fails_its_message_alone(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    injected = {"List-Unsubscribe": "<https://x.example/u/1>\r\nBcc: victim@example.com"}
    results = provider.send([make_message(1, headers=injected), make_message(2)])

    assert [(r.status, r.attempts, r.retryable) for r in results] == [
        ("failed", 0, False),
        ("sent", 1, False),
    ]
    assert "List-Unsubscribe has a line break (CR or LF)" in (results[0].error or "")
    assert [m.rcpt_tos for m in server.received] == [["customer2@example.com"]]


@pytest.mark.parametrize(
    ("overrides", "content_type"),
    [({"text": ""}, "text/html"), ({"html": ""}, "text/plain")],
)
def test_single_body_is_a_single_part(overrides: dict[str, str], content_type: str) -> None:
    mime = build_mime_message(make_message(1, **overrides))
    assert not mime.is_multipart()
    assert mime.get_content_type() == content_type


def test_long_html_lines_are_wrapped_for_smtp() -> None:
    mime = build_mime_message(make_message(1, html="<p>" + "x" * 5000 + "</p>"))
    assert max(len(line) for line in mime.as_bytes().split(b"\r\n")) <= 998


def test_message_id_is_a_valid_id_for_any_send_id() -> None:
    assert make_message_id("a b<c>@d", "x@example.com") == "<a-b-c--d@example.com>"


def test_unsendable_messages_fail_without_a_connection(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    results = provider.send(
        [
            make_message(1, html="", text=""),
            make_message(2, to_email="not-an-address"),
            make_message(3, subject="Hi\r\nBcc: victim@example.com"),
            make_message(4, to_email="josé@example.com"),
        ]
    )
    assert [(r.status, r.attempts, r.retryable) for r in results] == [("failed", 0, False)] * 4
    assert server.connection_count == 0


# -- connections ---------------------------------------------------------------------------


def test_one_connection_per_worker_is_reused_across_messages_and_sends(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    first = provider.send([make_message(n) for n in range(1, 6)])
    second = provider.send([make_message(n) for n in range(6, 9)])

    assert {r.status for r in first + second} == {"sent"}
    assert server.connection_count == 1
    assert len(server.received) == 8


def test_concurrent_workers_each_keep_their_own_connection(
    server: SmtpServer, sleeps: SleepRecorder
) -> None:
    with make_provider(server.port, sleeps, max_concurrency=3) as provider:
        results = provider.send([make_message(n) for n in range(12)])
    assert {r.status for r in results} == {"sent"}
    assert 1 <= server.connection_count <= 3
    assert sorted(m.rcpt_tos[0] for m in server.received) == sorted(
        f"customer{n}@example.com" for n in range(12)
    )


def test_reconnects_when_the_server_closed_an_idle_connection(
    server: SmtpServer, provider: SmtpProvider, sleeps: SleepRecorder
) -> None:
    provider.send([make_message(1)])
    server.close_connections()

    (result,) = provider.send([make_message(2)])

    assert (result.status, result.attempts) == ("sent", 1)  # the reconnect is not an attempt
    assert sleeps.calls == []
    assert server.connection_count == 2
    assert [m.rcpt_tos for m in server.received] == [
        ["customer1@example.com"],
        ["customer2@example.com"],
    ]


def test_connection_refused_is_retried_then_fails_retryable(sleeps: SleepRecorder) -> None:
    with make_provider(free_port(), sleeps) as provider:
        (result,) = provider.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", True, 3)
    assert "ConnectionRefusedError" in (result.error or "")
    assert sleeps.calls == [0.5, 1.0]


# -- replies -------------------------------------------------------------------------------


def test_4xx_recipient_reply_is_retried_then_sent(
    server: SmtpServer, provider: SmtpProvider, sleeps: SleepRecorder
) -> None:
    server.on_rcpt("customer1@example.com", ["451 4.3.0 Try again later"])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("sent", 2)
    assert sleeps.calls == [0.5]
    assert server.connection_count == 1  # RSET, not a new connection


def test_persistent_4xx_fails_retryable_with_the_servers_words(
    server: SmtpServer, provider: SmtpProvider, sleeps: SleepRecorder
) -> None:
    server.on_rcpt("customer1@example.com", ["452 4.2.2 Mailbox full"] * 3)
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", True, 3)
    assert result.error == "SMTP 452 4.2.2 Mailbox full"
    assert sleeps.calls == [0.5, 1.0]


def test_5xx_recipient_reply_is_permanent_and_the_batch_goes_on(
    server: SmtpServer, provider: SmtpProvider, sleeps: SleepRecorder
) -> None:
    server.on_rcpt(
        "customer2@example.com", ["550 5.1.1 <customer2@example.com>: Recipient address rejected"]
    )
    results = provider.send([make_message(n) for n in (1, 2, 3)])

    assert [r.status for r in results] == ["sent", "failed", "sent"]
    rejected = results[1]
    assert (rejected.retryable, rejected.attempts) == (False, 1)
    assert rejected.error == "SMTP 550 5.1.1 <c***@e***.com>: Recipient address rejected"
    assert sleeps.calls == []
    assert server.connection_count == 1


def test_5xx_after_data_is_permanent(server: SmtpServer, provider: SmtpProvider) -> None:
    server.on_data("customer1@example.com", ["554 5.7.1 Message rejected as spam"])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.retryable, result.attempts) == ("failed", False, 1)
    assert result.error == "SMTP 554 5.7.1 Message rejected as spam"
    assert server.received == []


def test_4xx_after_data_is_retried(
    server: SmtpServer, provider: SmtpProvider, sleeps: SleepRecorder
) -> None:
    server.on_data("customer1@example.com", ["451 4.7.1 Greylisted, try again"])
    (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("sent", 2)
    assert len(server.received) == 1


def test_hang_up_after_data_is_unknown_and_not_retried(
    server: SmtpServer, provider: SmtpProvider, sleeps: SleepRecorder
) -> None:
    server.on_data("customer1@example.com", ["drop"])
    results = provider.send([make_message(1), make_message(2)])

    assert [r.status for r in results] == ["unknown", "sent"]
    unknown = results[0]
    assert unknown.attempts == 1
    assert unknown.provider_message_id == "<send-0001@nudge.example>"
    assert "may have queued" in (unknown.error or "")
    assert sleeps.calls == []
    # The server did get the data once, and only once; the next message reconnected.
    assert [(m.rcpt_tos, m.answered) for m in server.received] == [
        (["customer1@example.com"], False),
        (["customer2@example.com"], True),
    ]
    assert server.connection_count == 2


def test_timeout_after_data_is_unknown_and_not_retried(
    server: SmtpServer, sleeps: SleepRecorder
) -> None:
    server.on_data("customer1@example.com", ["hang"])
    with make_provider(server.port, sleeps, timeout=TIMEOUT) as provider:
        (result,) = provider.send([make_message(1)])
    assert (result.status, result.attempts) == ("unknown", 1)
    assert "timeout 0.3s" in (result.error or "")
    assert len(server.received) == 1


# -- TLS and AUTH --------------------------------------------------------------------------


def test_auth_with_username_and_password(sleeps: SleepRecorder) -> None:
    with SmtpServer(username=USERNAME, password=PASSWORD, require_auth=True) as server:
        with make_provider(
            server.port, sleeps, username=USERNAME, password=PASSWORD, starttls=None
        ) as provider:
            results = provider.send([make_message(1), make_message(2)])
        assert [r.status for r in results] == ["sent", "sent"]
        assert [m.authenticated_as for m in server.received] == [USERNAME, USERNAME]
        assert server.auth_attempts == [(USERNAME, True)]  # one login per connection


def test_rejected_login_stops_the_batch_and_never_leaks_the_password(
    sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong password 123"
    with SmtpServer(username=USERNAME, password=PASSWORD, require_auth=True) as server:
        with make_provider(server.port, sleeps, username=USERNAME, password=wrong) as provider:
            assert wrong not in repr(provider)
            results = provider.send([make_message(n) for n in range(4)])
        # smtplib tries each offered mechanism once, on one connection; no other worker or
        # message tries again (no hammering AUTH into a lockout).
        assert server.auth_attempts == [(USERNAME, False), (USERNAME, False)]
        assert server.connection_count == 1
        assert server.received == []

    assert [r.status for r in results] == ["failed"] * 4
    assert all(r.retryable for r in results)
    assert [r.attempts for r in results] == [1, 0, 0, 0]
    assert "535" in (results[0].error or "")
    for text in [r.error or "" for r in results] + [r.getMessage() for r in caplog.records]:
        assert wrong not in text
        assert "d3JvbmcgcGFzc3dvcmQgMTIz" not in text  # base64 of it, as AUTH sends it


def test_starttls_required_but_not_offered_stops_the_batch(
    server: SmtpServer, sleeps: SleepRecorder
) -> None:
    with make_provider(server.port, sleeps, starttls=True) as provider:
        results = provider.send([make_message(1), make_message(2)])
    assert [(r.status, r.retryable) for r in results] == [("failed", True)] * 2
    assert "STARTTLS" in (results[0].error or "")
    assert server.connection_count == 1
    assert server.received == []


def test_starttls_auto_falls_back_to_plain_when_not_offered(
    server: SmtpServer, sleeps: SleepRecorder
) -> None:
    with make_provider(server.port, sleeps, starttls=None) as provider:
        assert provider.send([make_message(1)])[0].status == "sent"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (needs the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not found; needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_starttls_then_auth_over_a_verified_connection(
    certificate: tuple[Path, Path], sleeps: SleepRecorder
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    with SmtpServer(
        username=USERNAME, password=PASSWORD, require_auth=True, tls_context=server_tls
    ) as server:
        with make_provider(
            server.port,
            sleeps,
            username=USERNAME,
            password=PASSWORD,
            starttls=True,
            ssl_context=client_tls,
        ) as provider:
            (result,) = provider.send([make_message(1)])
        assert result.status == "sent"
        assert [m.authenticated_as for m in server.received] == [USERNAME]


def test_untrusted_certificate_stops_the_batch(
    certificate: tuple[Path, Path], sleeps: SleepRecorder
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    with SmtpServer(tls_context=server_tls) as server:
        # The default context does not trust a self-signed certificate.
        with make_provider(server.port, sleeps, starttls=True, ssl_context=None) as provider:
            results = provider.send([make_message(1), make_message(2)])
        assert [(r.status, r.retryable) for r in results] == [("failed", True)] * 2
        assert "TLS failed" in (results[0].error or "")
        assert server.received == []


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"username": USERNAME}, "together"),
        ({"password": PASSWORD}, "together"),
        ({"username": USERNAME, "password": PASSWORD, "starttls": False}, "clear text"),
        ({"port": 0}, "port"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_configuration_is_refused_without_echoing_the_password(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ProviderConfigError, match=match) as info:
        SmtpProvider("smtp.example.com", **kwargs)
    assert PASSWORD not in str(info.value)


def test_plain_auth_to_a_loopback_relay_is_allowed() -> None:
    with SmtpProvider(
        "127.0.0.1", 2525, username=USERNAME, password=PASSWORD, starttls=False
    ) as provider:
        assert PASSWORD not in repr(provider)
        assert "<hidden>" in repr(provider)
        assert provider.limits.idempotent is False


def test_rate_limit_spaces_messages(server: SmtpServer) -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with make_provider(
        server.port, SleepRecorder(), requests_per_second=2.0, sleep=sleep, clock=lambda: now[0]
    ) as provider:
        results = provider.send([make_message(n) for n in range(6)])
    assert {r.status for r in results} == {"sent"}
    assert sum(waits) == pytest.approx(2.0)  # a burst of 2, then one every 0.5 s


def test_close_quits_connections_and_send_after_close_raises(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    provider.send([make_message(1)])
    provider.close()
    provider.close()  # twice is fine
    with pytest.raises(ProviderError):
        provider.send([make_message(2)])
