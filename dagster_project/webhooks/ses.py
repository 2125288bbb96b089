"""Amazon SES events, published through an SNS topic to nudge's HTTPS endpoint.

Docs:

* https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html
* https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html
* https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html (the older format)
* https://docs.aws.amazon.com/sns/latest/dg/SendMessageToHttp.confirm.html

The request is an SNS message (verified by :mod:`.sns`, which explains the signature and
the one-hour window); its ``Message`` is a JSON string holding one SES event. Raw message
delivery must stay off on the subscription: without the SNS envelope there is no signature.

* ``SubscriptionConfirmation``: nothing to store; :attr:`Parsed.subscribe_url` tells the web
  service to confirm it with :func:`confirm_subscription` (only https URLs on an SNS host are
  accepted). ``UnsubscribeConfirmation`` is acknowledged and nothing else.
* ``Notification``: ``eventType`` (event publishing through a configuration set) or
  ``notificationType`` (the older identity notifications) says what happened. Bounces,
  complaints and delivery delays list several recipients; each becomes its own event.

Mapping: Delivery -> delivered, Bounce -> bounced (``bounceType`` Permanent -> hard,
Transient -> soft, Undetermined -> undetermined), Complaint -> complained (except a
``not-spam`` feedback report, RFC 5965, which says the opposite), DeliveryDelay -> deferred,
Reject -> dropped (SES refused to send it), Open -> opened, Click -> clicked, Subscription ->
unsubscribed when the recipient opted out of everything or of a topic (an opt-in is
ignored). Send and Rendering Failure are ignored.

``send_id``: the ``send_id`` message tag (``mail.tags`` is ``{"send_id": ["..."]}``). SES
publishes tags only through a configuration set, so the older notifications lack them; the
``X-Nudge-Send-Id`` header nudge puts on every message is the fallback, found in
``mail.headers`` when the original headers are included.

Dedupe: ``provider_event_id`` is the SNS ``MessageId``, the same on every SNS retry. When a
notification names several recipients, each event gets ``:<n>`` (its position in SES's
recipient list, which a retry repeats exactly).

SES has no machine-open flag and AWS documents no way to recognise Apple Mail Privacy
Protection's prefetch in ``open.userAgent`` or ``open.ipAddress``, so ``is_machine_open`` is
always False for SES.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dagster_project.webhooks.base import EmailEvent, Parsed, Rejected, WebhookSettings
from dagster_project.webhooks.common import (
    Headers,
    as_object,
    header,
    load_json,
    make_event,
    not_configured,
    parse_iso,
)
from dagster_project.webhooks.sns import (
    confirm_subscription,
    http_get,
    is_sns_url,
    verify_message,
)

__all__ = ["confirm_subscription", "receive"]

PROVIDER = "ses"
TOPICS_VARIABLE = "NUDGE_SES_TOPIC_ARNS"
SEND_ID_HEADER = "x-nudge-send-id"

BOUNCE_TYPE_MAP = {"permanent": "hard", "transient": "soft", "undetermined": "undetermined"}
IGNORED_TYPES = ("Send", "Rendering Failure", "RenderingFailure")


def _send_id(mail: dict[str, Any]) -> str | None:
    tags = mail.get("tags")
    values = tags.get("send_id") if isinstance(tags, dict) else None
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    for item in mail.get("headers") or []:
        if isinstance(item, dict) and str(item.get("name", "")).lower() == SEND_ID_HEADER:
            value = item.get("value")
            return value if isinstance(value, str) else None
    return None


def _addresses(items: Any, key: str | None = None) -> list[str | None]:
    """Recipient addresses of a list of strings, or of objects holding them under ``key``."""
    if not isinstance(items, list):
        return []
    if key is None:
        return [item if isinstance(item, str) else None for item in items]
    return [item.get(key) if isinstance(item, dict) else None for item in items]


def _only_recipient(mail: dict[str, Any]) -> list[str | None]:
    """For events about the message as a whole (open, click...): one event, addressed to
    its recipient when it had exactly one (nudge sends one recipient per message)."""
    destination = _addresses(mail.get("destination"))
    return [destination[0] if len(destination) == 1 else None]


def _opted_out(subscription: dict[str, Any]) -> bool:
    new = subscription.get("newTopicPreferences")
    if not isinstance(new, dict):
        return False
    if new.get("unsubscribeAll") is True:
        return True
    old = subscription.get("oldTopicPreferences")
    before = old.get("topicSubscriptionStatus") if isinstance(old, dict) else None
    was_out = {
        item.get("topicName")
        for item in before or []
        if isinstance(item, dict) and item.get("subscriptionStatus") == "OptOut"
    }
    return any(
        isinstance(item, dict)
        and item.get("subscriptionStatus") == "OptOut"
        and item.get("topicName") not in was_out
        for item in new.get("topicSubscriptionStatus") or []
    )


# (nudge event type, the object whose "timestamp" says when, recipients, bounce type)
Reading = tuple[str, dict[str, Any], list[str | None], str | None]


def _read(kind: str, event: dict[str, Any], mail: dict[str, Any]) -> Reading | None:
    """How nudge reads an SES event of type ``kind``; None to ignore it."""
    detail_key = kind[0].lower() + kind[1:]
    detail = as_object(event.get(detail_key))
    everyone = _addresses(mail.get("destination"))
    if kind == "Delivery":
        return "delivered", detail, _addresses(detail.get("recipients")) or everyone, None
    if kind == "Bounce":
        bounce_type = BOUNCE_TYPE_MAP.get(str(detail.get("bounceType", "")).lower())
        recipients = _addresses(detail.get("bouncedRecipients"), "emailAddress")
        return "bounced", detail, recipients or everyone, bounce_type
    if kind == "Complaint":
        if str(detail.get("complaintFeedbackType", "")).lower() == "not-spam":
            return None
        recipients = _addresses(detail.get("complainedRecipients"), "emailAddress")
        return "complained", detail, recipients or everyone, None
    if kind == "DeliveryDelay":
        recipients = _addresses(detail.get("delayedRecipients"), "emailAddress")
        return "deferred", detail, recipients or everyone, None
    if kind == "Reject":
        # A reject carries no time of its own: SES refused the message when it was sent.
        return "dropped", mail, everyone or [None], None
    if kind == "Open":
        return "opened", detail, _only_recipient(mail), None
    if kind == "Click":
        return "clicked", detail, _only_recipient(mail), None
    if kind == "Subscription" and _opted_out(detail):
        return "unsubscribed", detail, _only_recipient(mail), None
    return None


def _events(event: Any, message_id: str) -> list[EmailEvent]:
    """The events of one SES event record; [] when nudge does not track it."""
    if not isinstance(event, dict):
        return []
    kind = event.get("eventType") or event.get("notificationType")
    mail = as_object(event.get("mail"))
    if not isinstance(kind, str) or not kind or kind in IGNORED_TYPES:
        return []
    reading = _read(kind, event, mail)
    if reading is None:
        return []
    event_type, detail, recipients, bounce_type = reading
    occurred_at: datetime | None = parse_iso(detail.get("timestamp"))
    if occurred_at is None or not recipients:
        return []
    click = as_object(event.get("click"))
    return [
        make_event(
            PROVIDER,
            event,
            event_type=event_type,
            occurred_at=occurred_at,
            provider_event_id=message_id if len(recipients) == 1 else f"{message_id}:{n}",
            send_id=_send_id(mail),
            email=email,
            bounce_type=bounce_type,
            url=click.get("link"),
        )
        for n, email in enumerate(recipients)
    ]


def receive(
    headers: Headers,
    body: bytes,
    settings: WebhookSettings,
    *,
    now: float,
    fetch_certificate: Callable[[str], bytes] | None = None,
) -> Parsed:
    """Verify and parse one SNS POST carrying SES events (``headers`` lowercased)."""
    if not settings.ses_topic_arns:
        raise not_configured(PROVIDER, TOPICS_VARIABLE)
    # SNS signs the JSON document, not the request, so the envelope is read first; the
    # Message inside it is parsed only once the signature is verified.
    message = verify_message(
        load_json(body),
        header_type=header(headers, "x-amz-sns-message-type"),
        topic_arns=settings.ses_topic_arns,
        now=now,
        future_tolerance=settings.tolerance_seconds,
        fetch=fetch_certificate or http_get,
    )
    if message["Type"] == "SubscriptionConfirmation":
        if not is_sns_url(message["SubscribeURL"]):
            raise Rejected(403, "SubscribeURL is not an https URL on an SNS host")
        return Parsed(events=[], subscribe_url=message["SubscribeURL"])
    if message["Type"] == "UnsubscribeConfirmation":
        return Parsed(events=[])
    try:
        ses_event = json.loads(message["Message"])
    except ValueError:
        # Signed by SNS but not an SES event (a test message published by hand): acknowledged
        # so that SNS does not retry it.
        return Parsed(events=[], ignored=1)
    events = _events(ses_event, message["MessageId"])
    return Parsed(events=events, ignored=0 if events else 1)
