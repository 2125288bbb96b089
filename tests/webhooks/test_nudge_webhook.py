"""nudge's own event webhook (provider ``webhook``), and the contract all providers share:
settings, the unknown provider, what a refusal may say."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest

from dagster_project.webhooks import (
    BOUNCE_TYPES,
    EVENT_TYPES,
    Parsed,
    Rejected,
    WebhookSettings,
    receive,
)
from tests.support.webhook_signing import NOW, json_body, nudge_event, nudge_headers
from tests.webhooks.conftest import NUDGE_SECRET, POSTMARK_PASSWORD, RESEND_SECRET


def post(
    settings: WebhookSettings, document: Any, *, signed_at: float = NOW, now: float = NOW
) -> Parsed:
    body = document if isinstance(document, bytes) else json_body(document)
    return receive("webhook", nudge_headers(NUDGE_SECRET, body, signed_at), body, settings, now=now)


def rejected(settings: WebhookSettings, headers: dict[str, str], body: bytes) -> Rejected:
    with pytest.raises(Rejected) as caught:
        receive("webhook", headers, body, settings, now=NOW)
    return caught.value


# -- mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_event_type_is_stored_as_given(settings: WebhookSettings, event_type: str) -> None:
    raw = nudge_event(event_type, event_id="evt-1", send_id="send-0042", email=" Ada@Example.COM")
    parsed = post(settings, {"events": [raw]})

    assert parsed.ignored == 0
    (event,) = parsed.events
    assert event.provider == "webhook"
    assert event.event_type == event_type
    assert event.provider_event_id == "evt-1"
    assert event.event_id == "webhook:evt-1"
    assert event.send_id == "send-0042"
    assert event.email == "ada@example.com"
    assert event.occurred_at == datetime.fromtimestamp(NOW, tz=UTC)
    assert event.payload == json.dumps(raw, separators=(",", ":"))
    # An unspecified bounce type is undetermined; other types never carry one.
    assert event.bounce_type == ("undetermined" if event_type == "bounced" else None)


@pytest.mark.parametrize("bounce_type", BOUNCE_TYPES)
def test_bounce_types(settings: WebhookSettings, bounce_type: str) -> None:
    raw = nudge_event("bounced", bounce_type=bounce_type)
    assert post(settings, {"events": [raw]}).events[0].bounce_type == bounce_type


def test_opens_clicks_and_their_fields(settings: WebhookSettings) -> None:
    batch = [
        nudge_event("opened", event_id="e1", machine_open=True),
        nudge_event("opened", event_id="e2", machine_open=False),
        nudge_event("clicked", event_id="e3", url="https://shop.example/p/1"),
        # Fields that belong to another type are dropped, not stored.
        nudge_event("delivered", event_id="e4", url="https://x.example", machine_open=True),
    ]
    events = post(settings, {"events": batch}).events
    assert [(e.is_machine_open, e.url) for e in events] == [
        (True, None),
        (False, None),
        (False, "https://shop.example/p/1"),
        (False, None),
    ]


def test_an_offset_is_converted_to_utc_and_send_id_may_be_null(settings: WebhookSettings) -> None:
    raw = nudge_event(
        "delivered", send_id=None, email=None, occurred_at="2026-01-01T01:00:00+01:00"
    )
    (event,) = post(settings, {"events": [raw]}).events
    assert event.occurred_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert (event.send_id, event.email) == (None, None)


def test_events_that_do_not_follow_the_format_are_counted_not_stored(
    settings: WebhookSettings,
) -> None:
    no_id = nudge_event("delivered")
    del no_id["event_id"]
    batch = [
        nudge_event("delivered", event_id="good"),
        no_id,
        nudge_event("delivered", event_id="   "),
        nudge_event("delivered", event_id="x" * 257),
        nudge_event("exploded"),
        nudge_event("delivered", occurred_at="2026-01-01T00:00:00"),  # no offset
        nudge_event("delivered", occurred_at="whenever"),
        nudge_event("bounced", bounce_type="spongy"),
        nudge_event("opened", machine_open="yes"),
        nudge_event("clicked", url=42),
        {**nudge_event("delivered"), "send_id": 7},
        "not an object",
        nudge_event("delivered", event_id="also-good", extra_field={"kept": True}),
    ]
    parsed = post(settings, {"events": batch})
    assert [e.provider_event_id for e in parsed.events] == ["good", "also-good"]
    assert parsed.ignored == 11
    assert '"extra_field":{"kept":true}' in parsed.events[1].payload


def test_duplicates_share_an_event_id(settings: WebhookSettings) -> None:
    raw = nudge_event("clicked", url="https://shop.example")
    first = post(settings, {"events": [raw]}).events
    retried = post(settings, {"events": [raw]}, signed_at=NOW + 30, now=NOW + 30).events
    assert first[0].event_id == retried[0].event_id


def test_an_empty_batch_is_fine(settings: WebhookSettings) -> None:
    assert post(settings, {"events": []}) == Parsed(events=[])


# -- refusals ------------------------------------------------------------------------------


def test_missing_headers_are_401(settings: WebhookSettings) -> None:
    body = json_body({"events": [nudge_event("delivered")]})
    headers = nudge_headers(NUDGE_SECRET, body, NOW)
    for name in list(headers):
        partial = {k: v for k, v in headers.items() if k != name}
        assert rejected(settings, partial, body).status == 401


def test_a_wrong_signature_or_tampered_body_is_403(settings: WebhookSettings) -> None:
    body = json_body({"events": [nudge_event("delivered", send_id="send-0001")]})
    wrong = nudge_headers("another-secret-entirely-0123456789", body, NOW)
    error = rejected(settings, wrong, body)
    assert error.status == 403
    assert NUDGE_SECRET not in error.reason
    headers = nudge_headers(NUDGE_SECRET, body, NOW)
    assert rejected(settings, headers, body.replace(b"send-0001", b"send-0666")).status == 403


def test_a_rotated_secret_may_sign_alongside(settings: WebhookSettings) -> None:
    body = json_body({"events": [nudge_event("delivered")]})
    headers = nudge_headers(NUDGE_SECRET, body, NOW)
    old = nudge_headers("the-previous-secret-0123456789", body, NOW)["X-Nudge-Signature"]
    headers["X-Nudge-Signature"] = f"{old},{headers['X-Nudge-Signature']}"
    assert len(receive("webhook", headers, body, settings, now=NOW).events) == 1


@pytest.mark.parametrize("offset", [-301, 301])
def test_stale_and_future_timestamps_are_403(settings: WebhookSettings, offset: int) -> None:
    body = json_body({"events": [nudge_event("delivered")]})
    error = rejected(settings, nudge_headers(NUDGE_SECRET, body, NOW + offset), body)
    assert error.status == 403
    assert "tolerance" in error.reason


@pytest.mark.parametrize(
    "body",
    [
        json_body({"events": [nudge_event("delivered")]})[:-4],
        b"",
        json_body([nudge_event("delivered")]),
        json_body({"events": {"not": "a list"}}),
        json_body({"messages": []}),
    ],
)
def test_an_unreadable_body_with_a_valid_signature_is_400(
    settings: WebhookSettings, body: bytes
) -> None:
    assert rejected(settings, nudge_headers(NUDGE_SECRET, body, NOW), body).status == 400


def test_not_configured_is_503() -> None:
    body = json_body({"events": []})
    error = rejected(WebhookSettings(), nudge_headers(NUDGE_SECRET, body, NOW), body)
    assert error.status == 503
    assert error.reason == "the webhook webhook is not configured: set NUDGE_WEBHOOK_SECRET"


# -- the contract --------------------------------------------------------------------------


def test_an_unknown_provider_is_404(settings: WebhookSettings) -> None:
    with pytest.raises(Rejected) as caught:
        receive("mailchimp", {}, b"{}", settings, now=NOW)
    assert caught.value.status == 404


def test_a_refusal_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(Rejected(403, "the signature does not match")))
    assert (error.status, error.reason) == (403, "the signature does not match")


def test_settings_from_the_environment() -> None:
    settings = WebhookSettings.from_env(
        {
            "NUDGE_SES_TOPIC_ARNS": "arn:a, ,arn:b,",
            "NUDGE_POSTMARK_WEBHOOK_USER": "  ",
            "NUDGE_WEBHOOK_SECRET": " s3cret-value-0123456789 ",
        }
    )
    assert settings.ses_topic_arns == ("arn:a", "arn:b")
    assert settings.postmark_user is None
    assert settings.nudge_secret == "s3cret-value-0123456789"
    assert settings.tolerance_seconds == 300
    assert settings.configured() == ("ses", "webhook")
    assert WebhookSettings.from_env({}) == WebhookSettings()


def test_settings_repr_shows_no_secret(settings: WebhookSettings) -> None:
    shown = repr(settings)
    assert settings.configured() == ("sendgrid", "postmark", "ses", "resend", "webhook")
    for secret in (NUDGE_SECRET, POSTMARK_PASSWORD, RESEND_SECRET, settings.sendgrid_public_key):
        assert secret and secret not in shown
    assert "sendgrid" in shown
