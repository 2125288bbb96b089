"""SendGrid's Event Webhook: a signed JSON array of event objects.

Docs:

* https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
  (the Signed Event Webhook)
* https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event (event objects)
* https://www.twilio.com/docs/sendgrid/ui/analytics-and-reporting/bounce-and-block-classifications

Signature. With "Signed Event Webhook Requests" on, SendGrid signs each POST with an ECDSA
key pair it generated and shows the public key (base64 DER, SubjectPublicKeyInfo, P-256)
in Mail Settings. ``X-Twilio-Email-Event-Webhook-Signature`` is the base64 DER signature
(ECDSA with SHA-256) of the ``X-Twilio-Email-Event-Webhook-Timestamp`` header value
immediately followed by the raw body bytes. SendGrid documents no replay window; nudge
refuses a timestamp outside ``tolerance_seconds`` (300 s by default) either way, as
Stripe-style schemes do.

Quirks:

* A batch mixes event types; ``custom_args`` set on the message come back as TOP-LEVEL keys
  of each event object, so nudge's ``send_id`` is ``event["send_id"]``.
* ``sg_event_id`` is unique per event and stable across SendGrid's retries: the dedupe key.
* Bounce type: the ``type`` field says ``"bounce"`` (the receiving server refused the
  address: hard) or ``"blocked"`` (refused for now, typically reputation or content: soft).
  ``type`` wins when present. Without it, the newer ``bounce_classification`` decides:
  ``"Invalid Address"`` is what SendGrid itself calls a hard bounce; ``Technical``,
  ``Content``, ``Reputation``, ``Frequency or Volume`` and ``Mailbox Unavailable`` are
  problems that can clear, so soft; ``Unclassified`` (or nothing) is undetermined.
* ``sg_machine_open`` is true for opens SendGrid attributes to a machine (Apple Mail Privacy
  Protection's prefetch); some SDKs type it as a string, so ``"true"`` counts too.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dagster_project.webhooks.base import EmailEvent, Parsed, Rejected, WebhookSettings
from dagster_project.webhooks.common import (
    Headers,
    check_freshness,
    header,
    load_json,
    make_event,
    not_configured,
    parse_unix_seconds,
)

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
KEY_VARIABLE = "NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY"

# SendGrid "event" -> nudge event type; the rest ("processed", "group_resubscribe", ...) is
# acknowledged and ignored.
EVENT_MAP = {
    "delivered": "delivered",
    "deferred": "deferred",
    "bounce": "bounced",
    "dropped": "dropped",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "open": "opened",
    "click": "clicked",
}

BOUNCE_TYPE_MAP = {"bounce": "hard", "blocked": "soft"}

BOUNCE_CLASSIFICATION_MAP = {
    "invalid address": "hard",
    "technical": "soft",
    "content": "soft",
    "reputation": "soft",
    "frequency or volume": "soft",
    "mailbox unavailable": "soft",
    "unclassified": "undetermined",
}


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The verification key from SendGrid's base64 DER (a PEM block is accepted too)."""
    text = value.strip()
    if "BEGIN PUBLIC KEY" in text:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    else:
        key = serialization.load_der_public_key(base64.b64decode("".join(text.split())))
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


def verify(headers: Headers, body: bytes, settings: WebhookSettings, now: float) -> None:
    """Raise :class:`Rejected` unless the request carries SendGrid's valid, fresh signature."""
    if not settings.sendgrid_public_key:
        raise not_configured(PROVIDER, KEY_VARIABLE)
    try:
        key = load_public_key(settings.sendgrid_public_key)
    except (ValueError, TypeError, binascii.Error):
        raise Rejected(
            503, f"{KEY_VARIABLE} is not SendGrid's base64 DER ECDSA P-256 public key"
        ) from None
    signature = header(headers, SIGNATURE_HEADER)
    timestamp = header(headers, TIMESTAMP_HEADER)
    if signature is None or timestamp is None:
        raise Rejected(401, f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    check_freshness(timestamp, now, settings.tolerance_seconds)
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode("utf-8") + body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, ValueError, binascii.Error):
        raise Rejected(403, "the SendGrid signature does not match") from None


def _bounce_type(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if isinstance(kind, str) and kind.lower() in BOUNCE_TYPE_MAP:
        return BOUNCE_TYPE_MAP[kind.lower()]
    classification = event.get("bounce_classification")
    if isinstance(classification, str):
        return BOUNCE_CLASSIFICATION_MAP.get(classification.strip().lower(), "undetermined")
    return "undetermined"


def _machine_open(event: dict[str, Any]) -> bool:
    flag = event.get("sg_machine_open")
    return flag is True or (isinstance(flag, str) and flag.strip().lower() == "true")


def _event(raw: Any) -> EmailEvent | None:
    """The event nudge stores for one element of the batch, or None to ignore it."""
    if not isinstance(raw, dict):
        return None
    kind = raw.get("event")
    event_type = EVENT_MAP.get(kind) if isinstance(kind, str) else None
    occurred_at = parse_unix_seconds(raw.get("timestamp"))
    if event_type is None or occurred_at is None:
        return None
    sg_event_id = raw.get("sg_event_id")
    return make_event(
        PROVIDER,
        raw,
        event_type=event_type,
        occurred_at=occurred_at,
        provider_event_id=sg_event_id if isinstance(sg_event_id, str) else None,
        send_id=raw.get("send_id"),
        email=raw.get("email"),
        bounce_type=_bounce_type(raw) if event_type == "bounced" else None,
        is_machine_open=_machine_open(raw),
        url=raw.get("url"),
    )


def receive(headers: Headers, body: bytes, settings: WebhookSettings, *, now: float) -> Parsed:
    """Verify and parse one Event Webhook POST (``headers`` lowercased)."""
    verify(headers, body, settings, now)
    batch = load_json(body)
    if not isinstance(batch, list):
        raise Rejected(400, "expected a JSON array of SendGrid events")
    events = [event for event in map(_event, batch) if event is not None]
    return Parsed(events=events, ignored=len(batch) - len(events))
