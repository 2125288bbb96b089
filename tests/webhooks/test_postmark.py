"""Postmark's webhooks: HTTP Basic credentials, one record per request.

Postmark signs nothing and sends no timestamp, so there is no stale or future timestamp to
refuse here; the credentials are the whole check.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from dagster_project.webhooks import Parsed, Rejected, WebhookSettings, receive
from tests.support.webhook_signing import NOW, json_body, postmark_auth, postmark_record
from tests.webhooks.conftest import POSTMARK_PASSWORD, POSTMARK_USER

AUTH = postmark_auth(POSTMARK_USER, POSTMARK_PASSWORD)


def post(settings: WebhookSettings, record: Any, headers: dict[str, str] = AUTH) -> Parsed:
    body = record if isinstance(record, bytes) else json_body(record)
    return receive("postmark", headers, body, settings, now=NOW)


def rejected(settings: WebhookSettings, record: Any, headers: dict[str, str]) -> Rejected:
    with pytest.raises(Rejected) as caught:
        post(settings, record, headers)
    return caught.value


# -- mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record_type", "nudge", "bounce_type"),
    [
        ("Delivery", "delivered", None),
        ("Bounce", "bounced", "hard"),
        ("SpamComplaint", "complained", None),
        ("Open", "opened", None),
        ("Click", "clicked", None),
        ("SubscriptionChange", "unsubscribed", None),
    ],
)
def test_each_record_type_maps(
    settings: WebhookSettings, record_type: str, nudge: str, bounce_type: str | None
) -> None:
    raw = postmark_record(record_type, send_id="send-0042", email=" Ada@Example.COM")
    parsed = post(settings, raw)

    assert parsed.ignored == 0
    (event,) = parsed.events
    assert event.provider == "postmark"
    assert event.event_type == nudge
    assert event.bounce_type == bounce_type
    assert event.send_id == "send-0042"
    assert event.email == "ada@example.com"
    assert event.occurred_at == datetime.fromtimestamp(NOW, tz=UTC)
    assert event.payload == json.dumps(raw, separators=(",", ":"))
    # Postmark has no machine-open flag.
    assert event.is_machine_open is False


def test_clicks_carry_the_original_link(settings: WebhookSettings) -> None:
    raw = postmark_record("Click", OriginalLink="https://shop.example/p/1")
    (event,) = post(settings, raw).events
    assert event.url == "https://shop.example/p/1"


def test_timestamps_with_an_offset_become_utc(settings: WebhookSettings) -> None:
    # Postmark's own example: seven fractional digits and a -04:00 offset.
    raw = postmark_record("Delivery", DeliveredAt="2014-08-01T13:28:10.2735393-04:00")
    (event,) = post(settings, raw).events
    assert event.occurred_at == datetime(2014, 8, 1, 17, 28, 10, 273539, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("bounce", "nudge", "bounce_type"),
    [
        ("HardBounce", "bounced", "hard"),
        ("BadEmailAddress", "bounced", "hard"),
        ("ManuallyDeactivated", "bounced", "hard"),
        ("SoftBounce", "bounced", "soft"),
        ("Transient", "bounced", "soft"),
        ("DnsError", "bounced", "soft"),
        ("Blocked", "bounced", "soft"),
        ("Unknown", "bounced", "undetermined"),
        ("Unsubscribe", "unsubscribed", None),
        ("SpamComplaint", "complained", None),
        ("SMTPApiError", "dropped", None),
    ],
)
def test_bounce_types(
    settings: WebhookSettings, bounce: str, nudge: str, bounce_type: str | None
) -> None:
    (event,) = post(settings, postmark_record("Bounce", Type=bounce)).events
    assert (event.event_type, event.bounce_type) == (nudge, bounce_type)


def test_a_bounce_type_newer_than_the_table_follows_postmarks_inactive_flag(
    settings: WebhookSettings,
) -> None:
    deactivated = postmark_record("Bounce", Type="SomethingNew", Inactive=True)
    still_active = postmark_record("Bounce", Type="SomethingNew", Inactive=False)
    assert post(settings, deactivated).events[0].bounce_type == "hard"
    assert post(settings, still_active).events[0].bounce_type == "undetermined"


@pytest.mark.parametrize("bounce", ["AutoResponder", "AddressChange", "OpenRelayTest"])
def test_bounces_that_follow_a_delivered_message_are_ignored(
    settings: WebhookSettings, bounce: str
) -> None:
    assert post(settings, postmark_record("Bounce", Type=bounce)) == Parsed(events=[], ignored=1)


@pytest.mark.parametrize(
    ("reason", "nudge", "bounce_type"),
    [
        ("ManualSuppression", "unsubscribed", None),
        ("HardBounce", "bounced", "hard"),
        ("SpamComplaint", "complained", None),
    ],
)
def test_suppressions(
    settings: WebhookSettings, reason: str, nudge: str, bounce_type: str | None
) -> None:
    raw = postmark_record("SubscriptionChange", SuppressionReason=reason)
    (event,) = post(settings, raw).events
    assert (event.event_type, event.bounce_type) == (nudge, bounce_type)


def test_a_reactivation_is_ignored(settings: WebhookSettings) -> None:
    raw = postmark_record(
        "SubscriptionChange", SuppressSending=False, SuppressionReason=None, Metadata={}
    )
    assert post(settings, raw) == Parsed(events=[], ignored=1)


def test_bounces_are_keyed_on_their_id_other_events_on_their_content(
    settings: WebhookSettings,
) -> None:
    bounce = postmark_record("Bounce")
    (event,) = post(settings, bounce).events
    assert event.provider_event_id == str(bounce["ID"])
    assert event.event_id == f"postmark:{bounce['ID']}"

    delivery = postmark_record("Delivery")
    (first,) = post(settings, delivery).events
    (retried,) = post(settings, delivery).events
    assert first.provider_event_id is None
    assert first.event_id.startswith("postmark:sha256:")
    assert retried.event_id == first.event_id
    (other,) = post(settings, postmark_record("Delivery", send_id="send-0002")).events
    assert other.event_id != first.event_id


def test_unknown_records_and_records_without_a_time_are_ignored(
    settings: WebhookSettings,
) -> None:
    inbound = {"From": "someone@example.com", "Subject": "Re: hello", "TextBody": "hi"}
    untimed = postmark_record("Delivery")
    del untimed["DeliveredAt"]
    garbled = postmark_record("Open", ReceivedAt="last tuesday")
    for record in (postmark_record("SomethingNew"), inbound, untimed, garbled):
        assert post(settings, record) == Parsed(events=[], ignored=1)


def test_a_record_without_metadata_has_no_send_id(settings: WebhookSettings) -> None:
    (event,) = post(settings, postmark_record("Delivery", send_id=None, Metadata=None)).events
    assert event.send_id is None


# -- refusals ------------------------------------------------------------------------------


def test_missing_credentials_are_401(settings: WebhookSettings) -> None:
    record = postmark_record("Delivery")
    for headers in ({}, {"Authorization": "Bearer abc"}, {"Authorization": "Basic"}):
        error = rejected(settings, record, headers)
        assert error.status == 401
        assert "Basic" in error.reason


@pytest.mark.parametrize(
    "headers",
    [
        postmark_auth(POSTMARK_USER, "wrong-password"),
        postmark_auth("someone-else", POSTMARK_PASSWORD),
        postmark_auth(POSTMARK_USER, POSTMARK_PASSWORD + "x"),
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon-here").decode()},
    ],
)
def test_wrong_credentials_are_403(settings: WebhookSettings, headers: dict[str, str]) -> None:
    error = rejected(settings, postmark_record("Delivery"), headers)
    assert error.status == 403
    assert POSTMARK_PASSWORD not in error.reason


def test_the_authorization_header_is_case_insensitive(settings: WebhookSettings) -> None:
    headers = {"authorization": AUTH["Authorization"].replace("Basic", "basic")}
    assert len(post(settings, postmark_record("Open"), headers).events) == 1


@pytest.mark.parametrize(
    "body",
    [
        json_body(postmark_record("Delivery"))[:-5],
        b"",
        json_body([postmark_record("Delivery")]),
    ],
)
def test_an_unreadable_body_with_valid_credentials_is_400(
    settings: WebhookSettings, body: bytes
) -> None:
    assert rejected(settings, body, AUTH).status == 400


def test_not_configured_is_503() -> None:
    for settings in (WebhookSettings(), WebhookSettings(postmark_user=POSTMARK_USER)):
        error = rejected(settings, postmark_record("Delivery"), AUTH)
        assert error.status == 503
        assert "NUDGE_POSTMARK_WEBHOOK_USER" in error.reason
        assert "NUDGE_POSTMARK_WEBHOOK_PASSWORD" in error.reason
