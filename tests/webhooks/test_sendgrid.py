"""SendGrid's Signed Event Webhook: real ECDSA P-256 signatures over timestamp + body."""

from __future__ import annotations

import base64
import json
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dagster_project.webhooks import Parsed, Rejected, WebhookSettings, receive
from tests.support.webhook_signing import NOW, json_body, sendgrid_event, sign_sendgrid

Keys = tuple[ec.EllipticCurvePrivateKey, str]


def post(
    keys: Keys,
    settings: WebhookSettings,
    events: Any,
    *,
    signed_at: float = NOW,
    now: float = NOW,
) -> Parsed:
    body = events if isinstance(events, bytes) else json_body(events)
    headers = sign_sendgrid(keys[0], body, signed_at)
    return receive("sendgrid", headers, body, settings, now=now)


def rejected(settings: WebhookSettings, headers: dict[str, str], body: bytes) -> Rejected:
    with pytest.raises(Rejected) as caught:
        receive("sendgrid", headers, body, settings, now=NOW)
    return caught.value


# -- mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sendgrid", "nudge"),
    [
        ("delivered", "delivered"),
        ("deferred", "deferred"),
        ("bounce", "bounced"),
        ("dropped", "dropped"),
        ("spamreport", "complained"),
        ("unsubscribe", "unsubscribed"),
        ("group_unsubscribe", "unsubscribed"),
        ("open", "opened"),
        ("click", "clicked"),
    ],
)
def test_each_event_type_maps(
    sendgrid_keys: Keys, settings: WebhookSettings, sendgrid: str, nudge: str
) -> None:
    raw = sendgrid_event(sendgrid, send_id="send-0042", email="  Customer42@Example.COM ")
    parsed = post(sendgrid_keys, settings, [raw])

    assert parsed.ignored == 0
    (event,) = parsed.events
    assert event.event_type == nudge
    assert event.provider == "sendgrid"
    assert event.send_id == "send-0042"
    assert event.email == "customer42@example.com"
    assert event.occurred_at == datetime.fromtimestamp(NOW, tz=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert event.provider_event_id == raw["sg_event_id"]
    assert event.event_id == f"sendgrid:{raw['sg_event_id']}"
    assert event.payload == json.dumps(raw, separators=(",", ":"))
    assert event.bounce_type == ("hard" if nudge == "bounced" else None)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"type": "bounce"}, "hard"),
        ({"type": "blocked", "bounce_classification": "Reputation"}, "soft"),
        # ``type`` wins over the classification when both are present.
        ({"type": "blocked", "bounce_classification": "Invalid Address"}, "soft"),
        ({"type": None, "bounce_classification": "Invalid Address"}, "hard"),
        ({"type": None, "bounce_classification": "Mailbox Unavailable"}, "soft"),
        ({"type": None, "bounce_classification": "Unclassified"}, "undetermined"),
        ({"type": None, "bounce_classification": None}, "undetermined"),
    ],
)
def test_bounce_types(
    sendgrid_keys: Keys, settings: WebhookSettings, fields: dict[str, Any], expected: str
) -> None:
    raw = {k: v for k, v in sendgrid_event("bounce", **fields).items() if v is not None}
    (event,) = post(sendgrid_keys, settings, [raw]).events
    assert event.bounce_type == expected


@pytest.mark.parametrize(("flag", "machine"), [(True, True), ("true", True), (False, False)])
def test_machine_opens(
    sendgrid_keys: Keys, settings: WebhookSettings, flag: object, machine: bool
) -> None:
    (event,) = post(sendgrid_keys, settings, [sendgrid_event("open", sg_machine_open=flag)]).events
    assert event.event_type == "opened"
    assert event.is_machine_open is machine


def test_clicks_carry_the_url(sendgrid_keys: Keys, settings: WebhookSettings) -> None:
    raw = sendgrid_event("click", url="https://shop.example/p/1?utm=x")
    (event,) = post(sendgrid_keys, settings, [raw]).events
    assert event.url == "https://shop.example/p/1?utm=x"
    assert event.is_machine_open is False


def test_a_batch_keeps_what_nudge_tracks_and_counts_the_rest(
    sendgrid_keys: Keys, settings: WebhookSettings
) -> None:
    no_timestamp = sendgrid_event("delivered", send_id="send-0003")
    del no_timestamp["timestamp"]
    batch = [
        sendgrid_event("processed"),
        sendgrid_event("delivered", send_id="send-0001"),
        sendgrid_event("group_resubscribe"),
        sendgrid_event("brand_new_event"),
        no_timestamp,
        {**sendgrid_event("open", send_id="send-0002"), "timestamp": "not a time"},
        "not an object",
        sendgrid_event("open", send_id="send-0002"),
    ]
    parsed = post(sendgrid_keys, settings, batch)
    assert [(e.event_type, e.send_id) for e in parsed.events] == [
        ("delivered", "send-0001"),
        ("opened", "send-0002"),
    ]
    assert parsed.ignored == 6


def test_an_event_without_send_id_or_email_is_still_kept(
    sendgrid_keys: Keys, settings: WebhookSettings
) -> None:
    raw = sendgrid_event("delivered", send_id=None)
    del raw["email"]
    (event,) = post(sendgrid_keys, settings, [raw]).events
    assert event.send_id is None
    assert event.email is None


def test_duplicates_share_an_event_id(sendgrid_keys: Keys, settings: WebhookSettings) -> None:
    raw = sendgrid_event("bounce")
    first = post(sendgrid_keys, settings, [raw]).events
    retried = post(sendgrid_keys, settings, [raw], signed_at=NOW + 60, now=NOW + 60).events
    assert first[0].event_id == retried[0].event_id


def test_without_sg_event_id_the_content_hash_is_the_key(
    sendgrid_keys: Keys, settings: WebhookSettings
) -> None:
    raw = sendgrid_event("delivered")
    del raw["sg_event_id"]
    (event,) = post(sendgrid_keys, settings, [raw]).events
    (again,) = post(sendgrid_keys, settings, [dict(reversed(list(raw.items())))]).events
    assert event.provider_event_id is None
    assert event.event_id.startswith("sendgrid:sha256:")
    assert len(event.event_id.removeprefix("sendgrid:sha256:")) == 64
    assert again.event_id == event.event_id  # canonical JSON: key order does not matter


def test_header_names_are_case_insensitive(sendgrid_keys: Keys, settings: WebhookSettings) -> None:
    body = json_body([sendgrid_event("delivered")])
    headers = {k.lower(): v for k, v in sign_sendgrid(sendgrid_keys[0], body, NOW).items()}
    assert len(receive("sendgrid", headers, body, settings, now=NOW).events) == 1


# -- refusals ------------------------------------------------------------------------------


def test_a_missing_signature_is_401(sendgrid_keys: Keys, settings: WebhookSettings) -> None:
    body = json_body([sendgrid_event("delivered")])
    headers = sign_sendgrid(sendgrid_keys[0], body, NOW)
    for name in list(headers):
        partial = {k: v for k, v in headers.items() if k != name}
        assert rejected(settings, partial, body).status == 401
    assert rejected(settings, {}, body).status == 401


def test_a_signature_from_another_key_is_403(
    sendgrid_keys: Keys, settings: WebhookSettings
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    body = json_body([sendgrid_event("delivered")])
    error = rejected(settings, sign_sendgrid(other, body, NOW), body)
    assert error.status == 403
    assert "signature" in error.reason


def test_a_tampered_body_is_403(sendgrid_keys: Keys, settings: WebhookSettings) -> None:
    body = json_body([sendgrid_event("delivered", send_id="send-0001")])
    headers = sign_sendgrid(sendgrid_keys[0], body, NOW)
    tampered = body.replace(b"send-0001", b"send-0666")
    assert rejected(settings, headers, tampered).status == 403


def test_a_garbled_signature_is_403(sendgrid_keys: Keys, settings: WebhookSettings) -> None:
    body = json_body([sendgrid_event("delivered")])
    headers = sign_sendgrid(sendgrid_keys[0], body, NOW)
    headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64 at all!"
    assert rejected(settings, headers, body).status == 403


@pytest.mark.parametrize("offset", [-301, 301, -86_400])
def test_stale_and_future_timestamps_are_403(
    sendgrid_keys: Keys, settings: WebhookSettings, offset: int
) -> None:
    body = json_body([sendgrid_event("delivered")])
    headers = sign_sendgrid(sendgrid_keys[0], body, NOW + offset)
    error = rejected(settings, headers, body)
    assert error.status == 403
    assert "tolerance" in error.reason


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamps_inside_the_tolerance_pass(
    sendgrid_keys: Keys, settings: WebhookSettings, offset: int
) -> None:
    parsed = post(sendgrid_keys, settings, [sendgrid_event("delivered")], signed_at=NOW + offset)
    assert len(parsed.events) == 1


def test_a_timestamp_that_is_not_a_number_is_403(
    sendgrid_keys: Keys, settings: WebhookSettings
) -> None:
    body = json_body([sendgrid_event("delivered")])
    headers = sign_sendgrid(sendgrid_keys[0], body, NOW)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = "yesterday"
    assert rejected(settings, headers, body).status == 403


@pytest.mark.parametrize(
    "body",
    [
        json_body([sendgrid_event("delivered")])[:-7],  # truncated
        b"",
        b"\xff\xfe not utf-8",
        json_body({"event": "delivered"}),  # an object, not an array
    ],
)
def test_an_unreadable_body_with_a_valid_signature_is_400(
    sendgrid_keys: Keys, settings: WebhookSettings, body: bytes
) -> None:
    headers = sign_sendgrid(sendgrid_keys[0], body, NOW)
    assert rejected(settings, headers, body).status == 400


def test_not_configured_is_503(sendgrid_keys: Keys) -> None:
    body = json_body([sendgrid_event("delivered")])
    error = rejected(WebhookSettings(), sign_sendgrid(sendgrid_keys[0], body, NOW), body)
    assert error.status == 503
    assert error.reason == (
        "the sendgrid webhook is not configured: set NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY"
    )


def test_a_key_that_is_not_an_ecdsa_p256_key_is_503(sendgrid_keys: Keys) -> None:
    body = json_body([sendgrid_event("delivered")])
    headers = sign_sendgrid(sendgrid_keys[0], body, NOW)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = p384.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for key in ("not-a-key", base64.b64encode(der).decode()):
        error = rejected(WebhookSettings(sendgrid_public_key=key), headers, body)
        assert error.status == 503
        assert key not in error.reason


def test_a_pem_public_key_is_accepted_too(sendgrid_keys: Keys) -> None:
    lines = "\n".join(textwrap.wrap(sendgrid_keys[1], 64))
    pem = f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n"
    parsed = post(sendgrid_keys, WebhookSettings(sendgrid_public_key=pem), [sendgrid_event("open")])
    assert parsed.events[0].event_type == "opened"
