"""Resend's webhooks: one event per POST, signed by Svix.

Docs:

* https://resend.com/docs/dashboard/webhooks/verify-webhooks-requests
* https://resend.com/docs/dashboard/webhooks/event-types
* https://docs.svix.com/receiving/verifying-payloads/how-manual
* Resend's OpenAPI spec (``resend/resend-openapi``, ``resend.yaml``), whose ``webhooks:``
  section defines each event's schema (``EmailBouncedEvent``...); the tests validate their
  sample payloads against it.

Signature. Resend delivers through Svix: ``svix-id`` (the message id, the same on every
retry), ``svix-timestamp`` (Unix seconds) and ``svix-signature``, a space-separated list of
``v1,<base64 HMAC-SHA256>`` (several while a secret is being rotated) of
``f"{svix_id}.{svix_timestamp}.{body}"``, keyed with the base64 part of the ``whsec_...``
secret.

Why not ``svix.webhooks.Webhook.verify``: it checks the timestamp against the wall clock,
with no way to pass the time, while nudge verifies against the ``now`` it is given (so tests
and replays are deterministic). So nudge checks the timestamp itself (``tolerance_seconds``,
300 s by default, which is Svix's own window) and has Svix's ``Webhook.sign`` compute the
expected signature, compared in constant time against each ``v1`` entry. The cryptography
stays Svix's; only the clock is nudge's.

Mapping (``type``): ``email.delivered`` -> delivered, ``email.delivery_delayed`` ->
deferred, ``email.bounced`` -> bounced (``bounce.type`` Permanent -> hard, Transient ->
soft, else undetermined), ``email.complained`` -> complained, ``email.opened`` -> opened,
``email.clicked`` -> clicked (``click.link``), ``email.failed`` (Resend could not send it)
and ``email.suppressed`` (on Resend's suppression list) -> dropped. Everything else
(``email.sent``, ``email.scheduled``, ``email.received``, ``contact.*``, ``domain.*``) is
ignored. Resend has no machine-open flag, so ``is_machine_open`` is always False.

``send_id``: Resend echoes the message's tags as ``data.tags``, an object in the spec
(``{"send_id": "..."}``); the ``[{"name", "value"}]`` list the send API takes is accepted
too. ``occurred_at`` is ``click.timestamp`` for clicks, else the event's ``created_at``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dagster_project.webhooks.base import Parsed, Rejected, WebhookSettings
from dagster_project.webhooks.common import (
    Headers,
    as_object,
    check_freshness,
    header,
    load_json,
    make_event,
    not_configured,
    parse_iso,
)

if TYPE_CHECKING:
    from svix.webhooks import Webhook

PROVIDER = "resend"
SECRET_VARIABLE = "NUDGE_RESEND_WEBHOOK_SECRET"

EVENT_MAP = {
    "email.delivered": "delivered",
    "email.delivery_delayed": "deferred",
    "email.bounced": "bounced",
    "email.complained": "complained",
    "email.opened": "opened",
    "email.clicked": "clicked",
    "email.failed": "dropped",
    "email.suppressed": "dropped",
}
BOUNCE_TYPE_MAP = {"permanent": "hard", "transient": "soft"}


def _webhook(secret: str) -> Webhook:
    # Imported here, not at the top: the Svix SDK takes longer to import than the rest of the
    # webhooks package, and every `nudge` command and tick imports this module (the landing
    # drain parses Resend's events) while only `nudge serve` verifies a signature.
    from svix.webhooks import Webhook

    try:
        return Webhook(secret)
    except Exception:  # svix raises ValueError, binascii.Error or its own empty-secret error
        raise Rejected(503, f"{SECRET_VARIABLE} is not a Svix secret (whsec_...)") from None


def verify(headers: Headers, body: bytes, settings: WebhookSettings, now: float) -> str:
    """The ``svix-id`` of an authentic, fresh request; :class:`Rejected` otherwise."""
    if not settings.resend_secret:
        raise not_configured(PROVIDER, SECRET_VARIABLE)
    webhook = _webhook(settings.resend_secret)
    msg_id = header(headers, "svix-id")
    timestamp = header(headers, "svix-timestamp")
    signatures = header(headers, "svix-signature")
    if msg_id is None or timestamp is None or signatures is None:
        raise Rejected(401, "missing svix-id, svix-timestamp or svix-signature")
    check_freshness(timestamp, now, settings.tolerance_seconds)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Svix signs text; bytes that are not UTF-8 cannot be what Resend signed.
        raise Rejected(403, "the Svix signature does not match") from None
    signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
    expected = base64.b64decode(webhook.sign(msg_id, signed_at, text).split(",", 1)[1])
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            continue
        if hmac.compare_digest(expected, given):
            return msg_id
    raise Rejected(403, "the Svix signature does not match")


def _send_id(tags: Any) -> str | None:
    if isinstance(tags, dict):
        value = tags.get("send_id")
        return value if isinstance(value, str) else None
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, dict) and tag.get("name") == "send_id":
            value = tag.get("value")
            return value if isinstance(value, str) else None
    return None


def receive(headers: Headers, body: bytes, settings: WebhookSettings, *, now: float) -> Parsed:
    """Verify and parse one Resend webhook POST (``headers`` lowercased)."""
    msg_id = verify(headers, body, settings, now)
    event = load_json(body)
    if not isinstance(event, dict):
        raise Rejected(400, "expected one JSON object (a Resend event)")
    kind = event.get("type")
    event_type = EVENT_MAP.get(kind) if isinstance(kind, str) else None
    data = as_object(event.get("data"))
    bounce = as_object(data.get("bounce"))
    click = as_object(data.get("click"))
    occurred_at = parse_iso(click.get("timestamp")) if event_type == "clicked" else None
    occurred_at = occurred_at or parse_iso(event.get("created_at"))
    if event_type is None or occurred_at is None:
        return Parsed(events=[], ignored=1)
    recipients = [to for to in data.get("to") or [] if isinstance(to, str)]
    return Parsed(
        events=[
            make_event(
                PROVIDER,
                event,
                event_type=event_type,
                occurred_at=occurred_at,
                provider_event_id=msg_id,
                send_id=_send_id(data.get("tags")),
                email=recipients[0] if len(recipients) == 1 else None,
                bounce_type=BOUNCE_TYPE_MAP.get(str(bounce.get("type", "")).lower()),
                url=click.get("link"),
            )
        ]
    )
