"""nudge's own event webhook (provider ``webhook``): for a gateway of your own.

The ``webhook`` provider (:mod:`dagster_project.providers.webhook`) hands messages to your
own sending service; this is how that service reports back what happened to them. It uses
the same signature scheme as the requests nudge sends it, with ``NUDGE_WEBHOOK_SECRET``::

    POST /webhooks/webhook
    Content-Type: application/json
    X-Nudge-Timestamp: 1767225600          Unix seconds when the request was signed
    X-Nudge-Signature: sha256=<hex>        HMAC-SHA256(secret, f"{timestamp}.{body}")

    {"events": [
      {"event_id": "evt-0001",                 required: unique, the same on every retry
       "send_id": "s-...",                     the send_id nudge gave the message, or null
       "type": "bounced",                      delivered | deferred | bounced | complained |
                                               unsubscribed | opened | clicked | dropped
       "occurred_at": "2026-01-01T12:00:00Z",  ISO-8601 with a UTC offset (or Z)
       "email": "ada@example.com",             optional: the recipient
       "bounce_type": "hard",                  optional, bounced: hard | soft | undetermined
       "machine_open": false,                  optional, opened: a machine (MPP) open
       "url": "https://example.com/a"}         optional, clicked: the clicked URL
    ]}

The signature covers the raw body bytes and is checked before the body is parsed; a
timestamp further than ``tolerance_seconds`` (300 s) from nudge's clock either way is
refused, so sign each attempt afresh. Missing headers answer 401, a wrong signature or a
stale timestamp 403, a body that is not ``{"events": [...]}`` 400.

Within a valid batch, an event that does not follow the format above (no ``event_id``, an
unknown ``type``, a time without an offset, a field of the wrong type) is acknowledged and
counted as ignored, not stored: resending it would not help. Unknown extra fields are
allowed (and kept in the stored payload), so the format can grow. ``event_id`` is the dedupe
key: a retried event with the same ``event_id`` is stored once.
"""

from __future__ import annotations

from typing import Any

from dagster_project.providers.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_webhook_signature,
)
from dagster_project.webhooks.base import (
    BOUNCE_TYPES,
    EVENT_TYPES,
    EmailEvent,
    Parsed,
    Rejected,
    WebhookSettings,
)
from dagster_project.webhooks.common import (
    Headers,
    check_freshness,
    header,
    load_json,
    make_event,
    not_configured,
    parse_iso,
)

PROVIDER = "webhook"
SECRET_VARIABLE = "NUDGE_WEBHOOK_SECRET"
MAX_EVENT_ID_LENGTH = 256

# Optional field -> the types it may hold (None always allowed).
OPTIONAL_TYPES: dict[str, type | tuple[type, ...]] = {
    "send_id": str,
    "email": str,
    "bounce_type": str,
    "machine_open": bool,
    "url": str,
}


def verify(headers: Headers, body: bytes, settings: WebhookSettings, now: float) -> None:
    """Raise :class:`Rejected` unless the request is signed with the secret, recently."""
    if not settings.nudge_secret:
        raise not_configured(PROVIDER, SECRET_VARIABLE)
    timestamp = header(headers, TIMESTAMP_HEADER)
    signature = header(headers, SIGNATURE_HEADER)
    if timestamp is None or signature is None:
        raise Rejected(401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    check_freshness(timestamp, now, settings.tolerance_seconds)
    if not verify_webhook_signature(
        settings.nudge_secret, body, timestamp, signature, settings.tolerance_seconds, now=now
    ):
        raise Rejected(403, f"the {SIGNATURE_HEADER} does not match")


def _valid(item: dict[str, Any]) -> bool:
    event_id = item.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip():
        return False
    if len(event_id) > MAX_EVENT_ID_LENGTH or item.get("type") not in EVENT_TYPES:
        return False
    for name, types in OPTIONAL_TYPES.items():
        if item.get(name) is not None and not isinstance(item[name], types):
            return False
    return item.get("bounce_type") is None or item["bounce_type"] in BOUNCE_TYPES


def _event(item: Any) -> EmailEvent | None:
    if not isinstance(item, dict) or not _valid(item):
        return None
    occurred_at = parse_iso(item.get("occurred_at"), naive_is_utc=False)
    if occurred_at is None:
        return None
    return make_event(
        PROVIDER,
        item,
        event_type=item["type"],
        occurred_at=occurred_at,
        provider_event_id=item["event_id"].strip(),
        send_id=item.get("send_id"),
        email=item.get("email"),
        bounce_type=item.get("bounce_type"),
        is_machine_open=item.get("machine_open") is True,
        url=item.get("url"),
    )


def receive(headers: Headers, body: bytes, settings: WebhookSettings, *, now: float) -> Parsed:
    """Verify and parse one event report from your gateway (``headers`` lowercased)."""
    verify(headers, body, settings, now)
    document = load_json(body)
    batch = document.get("events") if isinstance(document, dict) else None
    if not isinstance(batch, list):
        raise Rejected(400, 'expected {"events": [...]}')
    events = [event for event in map(_event, batch) if event is not None]
    return Parsed(events=events, ignored=len(batch) - len(events))
