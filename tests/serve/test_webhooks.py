"""``POST /webhooks/PROVIDER`` over real HTTP, against the real app under uvicorn.

The unit tests (``tests/webhooks``) prove each provider's verification and mapping on
``receive`` alone. These prove what a provider actually meets: the HTTP answer it acts on
(2xx stops its retries, 401/403 are its operator's problem, 413/400 its payload's, 503
"try again later") and, for every answer, what the landing store durably holds afterwards,
since an acknowledged event that is not on disk is lost for good, and a refused one that is
on disk is a forgery nudge believed. Signatures are real (keys generated here) and signed at
the wall-clock time, because the live server checks them against ``time.time()``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dagster_project import events, ledger
from dagster_project.landing import LandingStore
from dagster_project.links import LinkSettings
from dagster_project.privacy.people import erasure_hash
from dagster_project.warehouse import connect
from dagster_project.webhooks import WebhookSettings
from dagster_project.webhooks.sns import clear_certificate_cache
from tests.support.service import Service, running_service
from tests.support.webhook_signing import (
    SES_TOPIC_ARN,
    SNS_CERT_URL,
    SUBSCRIBE_URL,
    CertificateFetcher,
    json_body,
    nudge_event,
    nudge_headers,
    postmark_auth,
    postmark_record,
    resend_event,
    sendgrid_event,
    sendgrid_keypair,
    ses_event,
    sign_sendgrid,
    sign_sns,
    sns_certificate,
    sns_confirmation,
    sns_notification,
    sns_request,
    svix_headers,
    svix_secret,
)

PROVIDERS = ("sendgrid", "postmark", "ses", "resend", "webhook")
POSTMARK_USER = "postmark-hooks"
POSTMARK_PASSWORD = "pm-password-correct-horse-battery-staple"
NUDGE_SECRET = "nudge-gateway-secret-0123456789abcdef0123"
OTHER_TOPIC_ARN = "arn:aws:sns:eu-west-1:999999999999:someone-elses-topic"
SUBSCRIBE_ANSWER = b"<ConfirmSubscriptionResponse/>"
FIVE_MB = 5 * 1024 * 1024

# (event_type, send_id, email) of one stored event.
Seen = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class Providers:
    """Every provider's credentials, as the service is configured with them and as the
    provider signs with them (the private halves the service never sees)."""

    sendgrid_key: ec.EllipticCurvePrivateKey
    sendgrid_public_key: str
    sns_key: rsa.RSAPrivateKey
    sns_pem: bytes
    resend_secret: str
    settings: WebhookSettings

    def secrets(self) -> list[str]:
        """Values that must never reach a log line."""
        return [POSTMARK_PASSWORD, NUDGE_SECRET, self.resend_secret, self.sendgrid_public_key]


@dataclass(frozen=True)
class Delivery:
    """One POST a provider would make: where, with which headers, which bytes."""

    provider: str
    headers: dict[str, str]
    body: bytes

    def post(self, client: httpx.Client) -> httpx.Response:
        return client.post(f"/webhooks/{self.provider}", headers=self.headers, content=self.body)


@pytest.fixture(scope="module")
def providers() -> Providers:
    """All five providers configured, read from the same variables ``nudge serve`` reads.

    Module-scoped: the RSA key is the slow part. The SNS certificate is valid around the wall
    clock (the server verifies against it), not around the fixed ``NOW`` of the unit tests.
    """
    sendgrid_key, sendgrid_public = sendgrid_keypair()
    now = time.time()
    sns_key, sns_pem = sns_certificate(not_before=now - 86_400, not_after=now + 86_400)
    resend = svix_secret()
    settings = WebhookSettings.from_env(
        {
            "NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_public,
            "NUDGE_POSTMARK_WEBHOOK_USER": POSTMARK_USER,
            "NUDGE_POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD,
            "NUDGE_SES_TOPIC_ARNS": SES_TOPIC_ARN,
            "NUDGE_RESEND_WEBHOOK_SECRET": resend,
            "NUDGE_WEBHOOK_SECRET": NUDGE_SECRET,
        }
    )
    assert settings.configured() == PROVIDERS
    return Providers(sendgrid_key, sendgrid_public, sns_key, sns_pem, resend, settings)


@pytest.fixture(autouse=True)
def _fresh_certificate_cache() -> Iterator[None]:
    # The SNS certificate cache is per process: without this, whether a test's fetcher is
    # asked for the certificate would depend on which test ran before it.
    clear_certificate_cache()
    yield
    clear_certificate_cache()


@pytest.fixture
def fetcher(providers: Providers) -> CertificateFetcher:
    """Stands in for AWS: serves the SNS certificate and answers the SubscribeURL."""
    return CertificateFetcher({SNS_CERT_URL: providers.sns_pem, SUBSCRIBE_URL: SUBSCRIBE_ANSWER})


@pytest.fixture
def hooks(
    links: LinkSettings, store: LandingStore, providers: Providers, fetcher: CertificateFetcher
) -> Iterator[Service]:
    """The service with every provider configured, on a fresh landing store."""
    with running_service(
        links, store, webhooks=providers.settings, fetch_certificate=fetcher
    ) as running:
        yield running


@pytest.fixture
def client(hooks: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hooks.url, timeout=30) as http:
        yield http


# -- building requests, signed as each provider signs them ----------------------------------


def sendgrid(p: Providers, items: list[dict[str, Any]], *, at: float | None = None) -> Delivery:
    body = json_body(items)
    headers = {"Content-Type": "application/json"}
    headers.update(sign_sendgrid(p.sendgrid_key, body, time.time() if at is None else at))
    return Delivery("sendgrid", headers, body)


def postmark(
    p: Providers, record: dict[str, Any], *, password: str = POSTMARK_PASSWORD
) -> Delivery:
    headers = {"Content-Type": "application/json", **postmark_auth(POSTMARK_USER, password)}
    return Delivery("postmark", headers, json_body(record))


def ses(p: Providers, message: dict[str, Any], *, signed: bool = True) -> Delivery:
    headers, body = sns_request(sign_sns(message, p.sns_key, 2) if signed else message)
    return Delivery("ses", headers, body)


def resend(
    p: Providers, event: dict[str, Any], *, msg_id: str, at: float | None = None
) -> Delivery:
    body = json_body(event)
    headers = {"Content-Type": "application/json"}
    headers.update(svix_headers(p.resend_secret, body, msg_id, time.time() if at is None else at))
    return Delivery("resend", headers, body)


def gateway(p: Providers, items: list[dict[str, Any]], *, at: float | None = None) -> Delivery:
    body = json_body({"events": items})
    headers = {"Content-Type": "application/json"}
    headers.update(nudge_headers(NUDGE_SECRET, body, time.time() if at is None else at))
    return Delivery("webhook", headers, body)


def valid_batch(provider: str, p: Providers) -> tuple[Delivery, list[Seen]]:
    """A realistic signed batch from ``provider`` and the events it must store."""
    if provider == "sendgrid":
        items = [
            sendgrid_event("delivered", email="ada@example.com", send_id="s-ada"),
            sendgrid_event("open", email="bob@example.com", send_id="s-bob"),
            sendgrid_event("bounce", email="cy@example.com", send_id="s-cy"),
            sendgrid_event("processed", email="dee@example.com", send_id="s-dee"),  # ignored
        ]
        return sendgrid(p, items), [
            ("bounced", "s-cy", "cy@example.com"),
            ("delivered", "s-ada", "ada@example.com"),
            ("opened", "s-bob", "bob@example.com"),
        ]
    if provider == "postmark":
        record = postmark_record("Bounce", email="ada@example.com", send_id="s-ada")
        return postmark(p, record), [("bounced", "s-ada", "ada@example.com")]
    if provider == "ses":
        record = ses_event("Bounce", email=["ada@example.com", "bob@example.com"], send_id="s-ses")
        delivery = ses(p, sns_notification(record, timestamp=time.time()))
        return delivery, [
            ("bounced", "s-ses", "ada@example.com"),
            ("bounced", "s-ses", "bob@example.com"),
        ]
    if provider == "resend":
        event = resend_event("email.delivered", email="ada@example.com", send_id="s-resend")
        return resend(p, event, msg_id="msg_2a9e1c0d"), [
            ("delivered", "s-resend", "ada@example.com")
        ]
    assert provider == "webhook"
    items = [
        nudge_event("delivered", event_id="e-1", email="ada@example.com", send_id="s-gw1"),
        nudge_event(
            "clicked", event_id="e-2", email="bob@example.com", send_id="s-gw2", url="https://x.io"
        ),
    ]
    return gateway(p, items), [
        ("clicked", "s-gw2", "bob@example.com"),
        ("delivered", "s-gw1", "ada@example.com"),
    ]


def refused_request(provider: str, mode: str, p: Providers) -> Delivery:
    """A request from ``provider`` that must be refused: ``mode`` is ``forged`` (signed, but
    not over these bytes or with the wrong secret), ``missing`` (no signature or
    credentials), ``stale`` (signed too long ago) or ``truncated`` (a valid signature over a
    body cut in half)."""
    now = time.time()
    if provider == "sendgrid":
        items = [sendgrid_event("bounce", email="ada@example.com", send_id="s-ada")]
        valid = sendgrid(p, items)
        if mode == "forged":
            return Delivery(provider, sendgrid(p, []).headers, valid.body)
        if mode == "missing":
            return Delivery(provider, {"Content-Type": "application/json"}, valid.body)
        if mode == "stale":
            return sendgrid(p, items, at=now - 600)
        body = valid.body[: len(valid.body) // 2]
        return Delivery(provider, sign_sendgrid(p.sendgrid_key, body, now), body)
    if provider == "postmark":
        valid = postmark(p, postmark_record("Bounce", email="ada@example.com", send_id="s-ada"))
        if mode == "forged":
            return Delivery(provider, postmark(p, {}, password="guessed").headers, valid.body)
        if mode == "missing":
            return Delivery(provider, {"Content-Type": "application/json"}, valid.body)
        assert mode == "truncated"
        return Delivery(provider, valid.headers, valid.body[: len(valid.body) // 2])
    if provider == "ses":
        record = ses_event("Bounce", email="ada@example.com", send_id="s-ada")
        if mode == "forged":
            # Signed by SNS, then the event inside swapped for another one.
            message = sign_sns(sns_notification(record, timestamp=now), p.sns_key, 2)
            other = ses_event("Complaint", email="ada@example.com", send_id="s-ada")
            message["Message"] = json.dumps(other)
            return Delivery(provider, *sns_request(message))
        if mode == "missing":
            return ses(p, sns_notification(record, timestamp=now), signed=False)
        if mode == "stale":
            # Outside SNS's own one-hour window (its retries re-send the original document).
            return ses(p, sns_notification(record, timestamp=now - 7200))
        valid = ses(p, sns_notification(record, timestamp=now))
        return Delivery(provider, valid.headers, valid.body[: len(valid.body) // 2])
    if provider == "resend":
        event = resend_event("email.bounced", email="ada@example.com", send_id="s-ada")
        valid = resend(p, event, msg_id="msg_forgery")
        if mode == "forged":
            other = svix_headers(svix_secret(), valid.body, "msg_forgery", now)
            return Delivery(provider, other, valid.body)
        if mode == "missing":
            return Delivery(provider, {"Content-Type": "application/json"}, valid.body)
        if mode == "stale":
            return resend(p, event, msg_id="msg_forgery", at=now - 600)
        body = valid.body[: len(valid.body) // 2]
        return Delivery(provider, svix_headers(p.resend_secret, body, "msg_forgery", now), body)
    assert provider == "webhook"
    items = [nudge_event("bounced", event_id="e-x", email="ada@example.com", send_id="s-ada")]
    valid = gateway(p, items)
    if mode == "forged":
        return Delivery(provider, nudge_headers("not-the-secret", valid.body, now), valid.body)
    if mode == "missing":
        return Delivery(provider, {"Content-Type": "application/json"}, valid.body)
    if mode == "stale":
        return gateway(p, items, at=now - 600)
    body = valid.body[: len(valid.body) // 2]
    return Delivery(provider, nudge_headers(NUDGE_SECRET, body, now), body)


def stored(store: LandingStore) -> list[Seen]:
    """What the store holds for the next tick, sorted for comparison."""
    return sorted(
        (e.event.event_type, e.event.send_id, e.event.email) for e in store.undrained_events()
    )


def raw_bytes(store: LandingStore) -> bytes:
    """Every byte SQLite keeps for the store: the database and its WAL."""
    files = [store.path, Path(f"{store.path}-wal"), Path(f"{store.path}-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


# -- a valid batch is stored, once ----------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_valid_signed_batch_is_acknowledged_and_stored(
    provider: str, providers: Providers, client: httpx.Client, store: LandingStore
) -> None:
    delivery, expected = valid_batch(provider, providers)
    response = delivery.post(client)
    assert response.status_code == 200, response.text
    ignored = 1 if provider == "sendgrid" else 0  # the "processed" event
    assert response.json() == {"received": len(expected), "new": len(expected), "ignored": ignored}
    assert stored(store) == expected
    assert {e.event.provider for e in store.undrained_events()} == {provider}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_same_batch_delivered_twice_is_stored_once(
    provider: str, providers: Providers, client: httpx.Client, store: LandingStore
) -> None:
    delivery, expected = valid_batch(provider, providers)
    first = delivery.post(client)
    again = delivery.post(client)  # the provider's retry: same events, same ids
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["new"] == len(expected)
    assert again.json() == {**first.json(), "new": 0}
    assert stored(store) == expected
    ids = [e.event.event_id for e in store.undrained_events()]
    assert len(ids) == len(set(ids)) == len(expected)


# -- refused requests store nothing ---------------------------------------------------------

REFUSALS = [
    pytest.param(provider, mode, status, id=f"{provider}-{mode}")
    for provider in PROVIDERS
    for mode, status in (("forged", 403), ("missing", 401), ("stale", 403), ("truncated", 400))
    # Basic auth carries no timestamp: there is no stale Postmark request.
    if not (provider == "postmark" and mode == "stale")
]


@pytest.mark.parametrize(("provider", "mode", "status"), REFUSALS)
def test_a_refused_request_says_why_and_stores_nothing(
    provider: str,
    mode: str,
    status: int,
    providers: Providers,
    client: httpx.Client,
    store: LandingStore,
) -> None:
    response = refused_request(provider, mode, providers).post(client)
    assert response.status_code == status, response.text
    assert response.text.strip(), "a refusal must say why"
    assert stored(store) == []


def test_postmark_without_credentials_is_challenged(
    providers: Providers, client: httpx.Client, store: LandingStore
) -> None:
    response = refused_request("postmark", "missing", providers).post(client)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    assert stored(store) == []


# -- oversized bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_5_mb_body_with_a_content_length_gets_413(
    provider: str, providers: Providers, client: httpx.Client, store: LandingStore
) -> None:
    # Signed and otherwise valid: the size alone is refused, before any verification.
    item = sendgrid_event("delivered", email="ada@example.com", send_id="s-big", pad="x" * 1000)
    items = [dict(item, sg_event_id=f"big-{i}") for i in range(FIVE_MB // 1000)]
    delivery = sendgrid(providers, items)
    assert len(delivery.body) > FIVE_MB
    response = client.post(f"/webhooks/{provider}", headers=delivery.headers, content=delivery.body)
    assert response.status_code == 413
    assert response.text.strip()
    assert stored(store) == []
    # The client's next batch is served (a refused body does not wedge its connection).
    batch, expected = valid_batch(provider, providers)
    assert batch.post(client).status_code == 200
    assert stored(store) == expected


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_5_mb_chunked_body_gets_413(
    provider: str, providers: Providers, client: httpx.Client, store: LandingStore
) -> None:
    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit must hold on what actually arrives.
        yield b'[{"event":"delivered","email":"ada@example.com","timestamp":1767225600,"pad":"'
        for _ in range(FIVE_MB // 65_536):
            yield b"x" * 65_536
        yield b'"}]'

    # Whatever credentials come with it: nothing is verified before the body is whole.
    headers = valid_batch(provider, providers)[0].headers
    response = client.post(f"/webhooks/{provider}", headers=headers, content=chunks())
    assert response.status_code == 413
    assert response.text.strip()
    assert stored(store) == []
    batch, expected = valid_batch(provider, providers)
    assert batch.post(client).status_code == 200
    assert stored(store) == expected


# -- SNS subscription confirmation ----------------------------------------------------------


def test_an_ses_subscription_is_confirmed_through_the_fetcher(
    providers: Providers, client: httpx.Client, store: LandingStore, fetcher: CertificateFetcher
) -> None:
    response = ses(providers, sns_confirmation(timestamp=time.time())).post(client)
    assert response.status_code == 200, response.text
    assert response.json() == {"confirmed": True}
    assert SUBSCRIBE_URL in fetcher.calls
    assert stored(store) == []


def test_an_ses_subscription_that_cannot_be_confirmed_is_a_502(
    providers: Providers, client: httpx.Client, store: LandingStore, fetcher: CertificateFetcher
) -> None:
    del fetcher.certificates[SUBSCRIBE_URL]  # AWS unreachable: SNS will ask again
    response = ses(providers, sns_confirmation(timestamp=time.time())).post(client)
    assert response.status_code == 502
    assert response.text.strip()
    assert SUBSCRIBE_URL in fetcher.calls


def test_a_subscription_to_a_topic_not_configured_is_refused_without_fetching(
    providers: Providers, client: httpx.Client, store: LandingStore, fetcher: CertificateFetcher
) -> None:
    # Anyone can subscribe nudge's URL to their own topic, with a valid SNS signature.
    message = sns_confirmation(timestamp=time.time(), topic_arn=OTHER_TOPIC_ARN)
    response = ses(providers, message).post(client)
    assert response.status_code == 403
    assert response.text.strip()
    assert fetcher.calls == []  # neither the certificate nor the SubscribeURL
    assert stored(store) == []


# -- unconfigured providers, unknown paths ---------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_provider_not_configured_gets_503(
    provider: str, providers: Providers, links: LinkSettings, tmp_path: Path
) -> None:
    store = LandingStore(tmp_path / "bare.sqlite")
    delivery, _ = valid_batch(provider, providers)
    with running_service(links, store, webhooks=WebhookSettings()) as bare:
        response = httpx.post(
            f"{bare.url}/webhooks/{provider}", headers=delivery.headers, content=delivery.body
        )
    assert response.status_code == 503  # so the provider retries once it is configured
    assert "NUDGE_" in response.text  # names what to set
    assert stored(store) == []


def test_an_unknown_provider_is_a_404(client: httpx.Client, store: LandingStore) -> None:
    response = client.post("/webhooks/mailgun", content=b"[]")
    assert response.status_code == 404
    assert response.text.strip()
    assert client.get("/webhooks/sendgrid").status_code == 405
    assert stored(store) == []


# -- the tick's drain -----------------------------------------------------------------------


def test_events_for_unknown_sends_are_kept_and_counted_unmatched(
    providers: Providers, client: httpx.Client, store: LandingStore, tmp_path: Path
) -> None:
    items = [
        sendgrid_event("delivered", email=f"u{i}@example.com", send_id=f"no-such-send-{i}")
        for i in range(3)
    ]
    assert sendgrid(providers, items).post(client).json()["new"] == 3
    assert len(stored(store)) == 3

    con = connect(tmp_path / "warehouse.duckdb")
    try:
        ledger.ensure_ledger(con)
        drained = events.drain(con, store)
        rows = con.execute(
            "select send_id, email, event_type from nudge.email_events order by send_id"
        ).fetchall()
    finally:
        con.close()
    assert (drained.events, drained.already_there, drained.unmatched) == (3, 0, 3)
    assert drained.by_type == {"delivered": 3}
    assert rows == [(f"no-such-send-{i}", f"u{i}@example.com", "delivered") for i in range(3)]
    assert store.undrained_events() == []


def test_an_event_for_an_erased_address_keeps_neither_address_nor_payload(
    providers: Providers, client: httpx.Client, store: LandingStore, tmp_path: Path
) -> None:
    gone, kept = "gone@example.com", "kept@example.com"
    con = connect(tmp_path / "warehouse.duckdb")
    try:
        ledger.ensure_ledger(con)
        (salt,) = con.execute("select salt from nudge.erasure_salt").fetchone() or ("",)
        assert salt
        con.execute(
            "insert into nudge.erasures (email_hash, erased_at, audit_id)"
            " values (?, now(), 'audit-erase-1')",
            [erasure_hash(salt, gone)],
        )
        # A late click from the erased person, and a complaint from someone else (an opt-out:
        # the store keeps those after the drain for the push-time re-check; the rest go).
        items = [
            sendgrid_event("click", email=gone, send_id="s-gone", sg_event_id="ev-gone"),
            sendgrid_event("spamreport", email=kept, send_id="s-kept", sg_event_id="ev-kept"),
        ]
        assert sendgrid(providers, items).post(client).json()["new"] == 2
        assert gone.encode() in raw_bytes(store)  # so the check below means something

        drained = events.drain(con, store)
        rows = con.execute(
            "select event_id, email, payload, url, event_type from nudge.email_events"
            " order by event_id"
        ).fetchall()
    finally:
        con.close()
    assert drained.events == 2
    assert rows[0] == ("sendgrid:ev-gone", None, None, None, "clicked")
    assert rows[1][:2] == ("sendgrid:ev-kept", kept) and rows[1][2] is not None
    with sqlite3.connect(store.path) as db:
        left = db.execute("select event_id from email_events order by event_id").fetchall()
    assert left == [("sendgrid:ev-kept",)]  # the erased one is gone, not merely drained
    assert gone.encode() not in raw_bytes(store).lower()


# -- the push-time re-check -----------------------------------------------------------------


def test_opt_outs_are_visible_at_push_time_before_any_drain(
    providers: Providers, client: httpx.Client, store: LandingStore
) -> None:
    address = "x@example.com"
    items = [
        sendgrid_event("bounce", email=address, sg_event_id="hard", type="bounce"),
        sendgrid_event("bounce", email=address, sg_event_id="soft", type="blocked"),
        sendgrid_event("open", email=address, sg_event_id="open"),
    ]
    assert sendgrid(providers, items).post(client).json()["new"] == 3
    opt_outs = store.opt_outs_for(["X@Example.com"])
    assert [(e.event_id, e.event_type, e.bounce_type) for e in opt_outs] == [
        ("sendgrid:hard", "bounced", "hard")
    ]
    assert store.opt_outs_for(["someone.else@example.com"]) == []


# -- logs -----------------------------------------------------------------------------------


def _log_lines(caplog: pytest.LogCaptureFixture, until: Callable[[list[str]], bool]) -> list[str]:
    # The access line is written after the answer is sent: give the server thread a moment.
    deadline = time.monotonic() + 5
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "nudge.serve"]
        if until(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_logs_never_show_signatures_or_secrets(
    providers: Providers, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    refused = [
        refused_request(provider, mode, providers)
        for provider in PROVIDERS
        for mode in ("forged", "truncated")
    ]
    with caplog.at_level(logging.INFO, logger="nudge.serve"):
        for delivery in refused:
            assert delivery.post(client).status_code in (400, 403)
        lines = _log_lines(caplog, lambda ls: sum("/webhooks/" in line for line in ls) >= 10)
    assert sum("refused" in line for line in lines) == len(refused), lines
    assert any("POST /webhooks/sendgrid 403" in line for line in lines), lines
    text = "\n".join(lines)
    header_values = [
        value
        for delivery in refused
        for name, value in delivery.headers.items()
        if name.lower() not in ("content-type", "user-agent")
        and not name.lower().startswith("x-amz-sns-")
        and not name.lower().endswith("timestamp")
    ]
    sns_signatures = [
        json.loads(d.body)["Signature"]
        for d in refused
        if d.provider == "ses" and d.body.rstrip().endswith(b"}")
    ]
    for secret in [*providers.secrets(), *header_values, *sns_signatures]:
        assert secret not in text
        # Nor a recognisable piece of it.
        assert secret[-16:] not in text


def test_a_crafted_webhook_path_cannot_forge_a_log_line(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The path is the client's: a URL-encoded newline in it once wrote a second, forged line
    ("... POST /u/forged 200") into the service's log."""
    forged = "x%0A2026-01-01%20nudge.serve%20POST%20%2Fu%2Fforged%20200"
    with caplog.at_level(logging.INFO, logger="nudge.serve"):
        answer = client.post(f"/webhooks/{forged}", content=b"{}")
        lines = _log_lines(caplog, lambda ls: any("/webhooks/" in line for line in ls))
    assert answer.status_code == 404
    text = "\n".join(lines)
    assert "\n" not in text and "forged" not in text, lines
    assert any("POST /webhooks/<unknown> 404" in line for line in lines), lines


# -- hostile values inside signed requests (found in review) ---------------------------------


def test_an_event_dated_year_1_is_ignored_and_never_blocks_the_drain(
    providers: Providers, client: httpx.Client, store: LandingStore, tmp_path: Path
) -> None:
    """Go's and .NET's zero time (0001-01-01) was once stored with a 200 and then failed every
    drain (and so every tick, and nudge erase) because the store could not read it back."""
    zero = nudge_event("complained", event_id="zero", email="a@example.com")
    zero["occurred_at"] = "0001-01-01T00:00:00Z"
    shifted = nudge_event("delivered", event_id="shifted", email="a@example.com")
    shifted["occurred_at"] = "0001-01-01T00:00:00+01:00"
    real = nudge_event("delivered", event_id="real", email="a@example.com", timestamp=time.time())
    answer = gateway(providers, [zero, shifted, real]).post(client)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "new": 1, "ignored": 2}
    con = connect(tmp_path / "w.duckdb")
    try:
        ledger.ensure_ledger(con)
        assert events.drain(con, store).events == 1
    finally:
        con.close()


def test_a_body_nested_too_deeply_is_a_400_not_a_500(client: httpx.Client) -> None:
    answer = client.post(
        "/webhooks/ses",
        content=b"[" * 200_000,
        headers={"Content-Type": "text/plain", "x-amz-sns-message-type": "Notification"},
    )
    assert answer.status_code == 400 and "nested" in answer.text


def test_a_non_ascii_signature_is_refused_not_a_500(
    providers: Providers, client: httpx.Client, store: LandingStore
) -> None:
    delivery = gateway(providers, [nudge_event("delivered", timestamp=time.time())])
    headers = {**delivery.headers, "X-Nudge-Signature": "sha256=\u00e9\u00e9"}
    answer = client.post(
        "/webhooks/webhook",
        content=delivery.body,
        headers={k: v.encode("utf-8") for k, v in headers.items()},
    )
    assert answer.status_code == 403
    assert store.undrained_events() == []


def test_a_lone_surrogate_cannot_fail_other_requests_stored_with_it(
    providers: Providers, client: httpx.Client, store: LandingStore
) -> None:
    """JSON allows "\\ud800", which is not UTF-8: it once failed the writer's whole group commit,
    and the provider's retries with it, forever."""
    body = (
        b'{"events": [{"event_id": "s1", "send_id": "x", "type": "clicked",'
        b' "occurred_at": "2026-06-01T00:00:00Z", "email": "\\ud800@example.com",'
        b' "url": "https://e.example/\\udfff"}]}'
    )
    stamp = time.time()
    answer = client.post(
        "/webhooks/webhook",
        content=body,
        headers={"Content-Type": "application/json", **nudge_headers(NUDGE_SECRET, body, stamp)},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["new"] == 1
    (landed,) = store.undrained_events()
    assert landed.event.email == "?@example.com"  # encode(errors="replace")
