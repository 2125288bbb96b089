"""Postmark's webhooks: one JSON object per POST, protected by HTTP Basic credentials.

Docs:

* https://postmarkapp.com/developer/webhooks/webhooks-overview (protecting your webhook)
* https://postmarkapp.com/developer/webhooks/delivery-webhook
* https://postmarkapp.com/developer/webhooks/bounce-webhook
* https://postmarkapp.com/developer/webhooks/spam-complaint-webhook
* https://postmarkapp.com/developer/webhooks/open-tracking-webhook
* https://postmarkapp.com/developer/webhooks/click-webhook
* https://postmarkapp.com/developer/webhooks/subscription-change-webhook
* https://postmarkapp.com/developer/api/bounce-api#bounce-types
* https://postmarkapp.com/support/article/1257-open-tracking-and-apple-mail

Authentication. Postmark does not sign its webhooks. Its documented protection is Basic
auth in the webhook URL (``https://user:password@host/...``), which Postmark sends as an
``Authorization: Basic`` header. Both parts are compared in constant time, always both (no
early exit that would tell which one was wrong). Basic auth carries no timestamp, so there is
no replay window to check: only HTTPS protects the credentials in transit, and the dedupe
key makes a replayed event harmless.

Quirks:

* ``RecordType`` says which webhook it is. The timestamp and recipient fields differ per
  type (``DeliveredAt``/``Recipient``, ``BouncedAt``/``Email``, ``ReceivedAt``/``Recipient``,
  ``ChangedAt``/``Recipient``).
* Postmark echoes the message's ``Metadata`` on its webhooks: ``Metadata.send_id``.
* Events have no unique id, except bounces and spam complaints (``ID``, the bounce record's
  id). Other events are deduplicated on the hash of their JSON.
* Postmark has no machine-open flag and documents no way to tell Apple Mail Privacy
  Protection's prefetch from a real open (its support article only warns they inflate
  opens), so ``is_machine_open`` is always False for Postmark.
* ``SubscriptionChange`` reports suppression-list changes. ``SuppressSending: false`` is a
  reactivation, which nudge ignores. A suppression's ``SuppressionReason`` says why:
  ``HardBounce`` (a hard bounce), ``SpamComplaint`` (a complaint) or ``ManualSuppression``
  (which is also what a recipient's unsubscribe becomes).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime
from typing import Any

from dagster_project.webhooks.base import EmailEvent, Parsed, Rejected, WebhookSettings
from dagster_project.webhooks.common import (
    Headers,
    header,
    load_json,
    make_event,
    not_configured,
    parse_iso,
)

PROVIDER = "postmark"
USER_VARIABLE = "NUDGE_POSTMARK_WEBHOOK_USER"
PASSWORD_VARIABLE = "NUDGE_POSTMARK_WEBHOOK_PASSWORD"

# Bounce ``Type`` -> (nudge event type, bounce type); None: acknowledged and ignored.
# Postmark's bounce-types table (TypeCode in the comments). Not every "bounce" is a failed
# delivery: auto-replies, address-change notices and open-relay tests follow a delivered
# message, and two types mean Postmark never sent it at all (dropped).
BOUNCE_TYPE_MAP: dict[str, tuple[str, str | None] | None] = {
    "HardBounce": ("bounced", "hard"),  # 1: unknown user, mailbox not found
    "Transient": ("bounced", "soft"),  # 2: message delayed
    "Unsubscribe": ("unsubscribed", None),  # 16: an unsubscribe or remove request
    "Subscribe": None,  # 32: a subscribe request
    "AutoResponder": None,  # 64: out of office, on vacation
    "AddressChange": None,  # 128: the recipient announced a new address
    "DnsError": ("bounced", "soft"),  # 256: a temporary DNS error
    "SpamNotification": ("bounced", "soft"),  # 512: blocked or classified as spam
    "OpenRelayTest": None,  # 1024: not a bounce
    "Unknown": ("bounced", "undetermined"),  # 2048: unable to classify
    "SoftBounce": ("bounced", "soft"),  # 4096: mailbox full, over quota...
    "VirusNotification": ("bounced", "soft"),  # 8192
    "ChallengeVerification": ("bounced", "soft"),  # 16384: a challenge to confirm the sender
    "BadEmailAddress": ("bounced", "hard"),  # 100000: not a valid address
    "SpamComplaint": ("complained", None),  # 100001
    "ManuallyDeactivated": ("bounced", "hard"),  # 100002: Postmark will not send to it
    "Unconfirmed": ("bounced", "undetermined"),  # 100003: registration not confirmed
    "Blocked": ("bounced", "soft"),  # 100006: ISP block, usually reputation or content
    "SMTPApiError": ("dropped", None),  # 100007: refused at Postmark's SMTP API
    "InboundError": None,  # 100008: inbound processing, not about sent mail
    "DMARCPolicy": ("bounced", "soft"),  # 100009: the sender's DMARC policy, fixable
    "TemplateRenderingFailed": ("dropped", None),  # 100010: never sent
}

SUPPRESSION_MAP: dict[str, tuple[str, str | None]] = {
    "HardBounce": ("bounced", "hard"),
    "SpamComplaint": ("complained", None),
}

# RecordType -> (timestamp field, recipient field)
FIELDS = {
    "Delivery": ("DeliveredAt", "Recipient"),
    "Bounce": ("BouncedAt", "Email"),
    "SpamComplaint": ("BouncedAt", "Email"),
    "Open": ("ReceivedAt", "Recipient"),
    "Click": ("ReceivedAt", "Recipient"),
    "SubscriptionChange": ("ChangedAt", "Recipient"),
}


def _credentials(value: str) -> tuple[bytes, bytes] | None:
    """The (user, password) of a ``Basic`` header value; None when it cannot be read."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (ValueError, binascii.Error):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def verify(headers: Headers, settings: WebhookSettings) -> None:
    """Raise :class:`Rejected` unless the request carries the configured Basic credentials."""
    if not (settings.postmark_user and settings.postmark_password):
        raise not_configured(PROVIDER, USER_VARIABLE, PASSWORD_VARIABLE)
    authorization = header(headers, "Authorization")
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise Rejected(
            401, 'missing HTTP Basic credentials (WWW-Authenticate: Basic realm="nudge")'
        )
    given = _credentials(value)
    user_ok = hmac.compare_digest(given[0] if given else b"", settings.postmark_user.encode())
    password_ok = hmac.compare_digest(
        given[1] if given else b"", settings.postmark_password.encode()
    )
    if not (given and user_ok and password_ok):
        raise Rejected(403, "the Postmark webhook credentials are wrong")


def _classify(record: dict[str, Any]) -> tuple[str, str | None] | None:
    """(event type, bounce type) for the record; None to ignore it."""
    kind = record.get("RecordType")
    if kind in ("Delivery", "Open", "Click"):
        return {"Delivery": "delivered", "Open": "opened", "Click": "clicked"}[kind], None
    if kind == "SpamComplaint":
        return "complained", None
    if kind == "Bounce":
        bounce = record.get("Type")
        if isinstance(bounce, str) and bounce in BOUNCE_TYPE_MAP:
            return BOUNCE_TYPE_MAP[bounce]
        # A type newer than this table: Postmark's own verdict (it deactivated the address
        # or not) is the best guide.
        return ("bounced", "hard") if record.get("Inactive") is True else ("bounced", None)
    if kind == "SubscriptionChange":
        if record.get("SuppressSending") is not True:
            return None
        return SUPPRESSION_MAP.get(str(record.get("SuppressionReason")), ("unsubscribed", None))
    return None


def _event(record: dict[str, Any]) -> EmailEvent | None:
    classified = _classify(record)
    kind = record.get("RecordType")
    if classified is None or kind not in FIELDS:
        return None
    event_type, bounce_type = classified
    time_field, email_field = FIELDS[kind]
    occurred_at: datetime | None = parse_iso(record.get(time_field))
    if occurred_at is None:
        return None
    record_id = record.get("ID")
    has_id = kind in ("Bounce", "SpamComplaint") and isinstance(record_id, int | str)
    metadata = record.get("Metadata")
    return make_event(
        PROVIDER,
        record,
        event_type=event_type,
        occurred_at=occurred_at,
        provider_event_id=str(record_id) if has_id else None,
        send_id=metadata.get("send_id") if isinstance(metadata, dict) else None,
        email=record.get(email_field),
        bounce_type=bounce_type,
        url=record.get("OriginalLink"),
    )


def receive(headers: Headers, body: bytes, settings: WebhookSettings, *, now: float) -> Parsed:
    """Verify and parse one Postmark webhook POST (``headers`` lowercased)."""
    verify(headers, settings)
    record = load_json(body)
    if not isinstance(record, dict):
        raise Rejected(400, "expected one JSON object (a Postmark webhook record)")
    event = _event(record)
    return Parsed(events=[event]) if event else Parsed(events=[], ignored=1)
