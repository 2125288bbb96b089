"""Resend's Svix-signed webhooks, signed here by Svix's own code.

The sample payloads are validated against the event schemas of Resend's published OpenAPI
spec (its ``webhooks:`` section) when ``../shared/specs`` is present; that check skips
without it (and fails under ``NUDGE_REQUIRE_SPECS``), every other test still runs.
"""

from __future__ import annotations

import functools
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from dagster_project.webhooks import Parsed, Rejected, WebhookSettings, receive
from tests.support.spec_schemas import load_spec
from tests.support.webhook_signing import (
    NOW,
    iso,
    json_body,
    resend_event,
    svix_headers,
    svix_secret,
)
from tests.webhooks.conftest import RESEND_SECRET

MSG_ID = "msg_2pSb3ZkLHCG1nUZ9Z0xJQmyxYzC"


def post(
    settings: WebhookSettings,
    event: Any,
    *,
    msg_id: str = MSG_ID,
    signed_at: float = NOW,
    now: float = NOW,
) -> Parsed:
    body = event if isinstance(event, bytes) else json_body(event)
    headers = svix_headers(RESEND_SECRET, body, msg_id, signed_at)
    return receive("resend", headers, body, settings, now=now)


def rejected(settings: WebhookSettings, headers: dict[str, str], body: bytes) -> Rejected:
    with pytest.raises(Rejected) as caught:
        receive("resend", headers, body, settings, now=NOW)
    return caught.value


@functools.cache
def spec_validator(event_type: str) -> Validator:
    """A validator for ``event_type``'s payload, found through the spec's ``webhooks:``."""
    document = load_spec("resend")
    schema = document["webhooks"][event_type]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    uri = "urn:nudge:spec:resend-webhooks"
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(uri, resource)
    validator: Validator = Draft202012Validator(
        {"$ref": f"{uri}{schema['$ref']}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return validator


SAMPLES = {
    "email.sent": resend_event("email.sent"),
    "email.delivered": resend_event("email.delivered"),
    "email.delivery_delayed": resend_event("email.delivery_delayed"),
    "email.bounced": resend_event("email.bounced"),
    "email.complained": resend_event("email.complained"),
    "email.opened": resend_event("email.opened"),
    "email.clicked": resend_event("email.clicked"),
    "email.failed": resend_event("email.failed"),
    "email.suppressed": resend_event("email.suppressed"),
    "email.scheduled": resend_event("email.scheduled"),
}


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_sample_payloads_follow_resends_published_schemas(event_type: str) -> None:
    spec_validator(event_type).validate(SAMPLES[event_type])


def test_the_spec_check_catches_a_wrong_payload() -> None:
    wrong = resend_event("email.bounced")
    del wrong["data"]["bounce"]["type"]
    assert not spec_validator("email.bounced").is_valid(wrong)


# -- mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resend", "nudge"),
    [
        ("email.delivered", "delivered"),
        ("email.delivery_delayed", "deferred"),
        ("email.bounced", "bounced"),
        ("email.complained", "complained"),
        ("email.opened", "opened"),
        ("email.clicked", "clicked"),
        ("email.failed", "dropped"),
        ("email.suppressed", "dropped"),
    ],
)
def test_each_event_type_maps(settings: WebhookSettings, resend: str, nudge: str) -> None:
    raw = resend_event(resend, send_id="send-0042", email="Ada@Example.COM ")
    parsed = post(settings, raw)

    assert parsed.ignored == 0
    (event,) = parsed.events
    assert event.provider == "resend"
    assert event.event_type == nudge
    assert event.send_id == "send-0042"
    assert event.email == "ada@example.com"
    assert event.provider_event_id == MSG_ID
    assert event.event_id == f"resend:{MSG_ID}"
    assert event.occurred_at == datetime.fromtimestamp(NOW, tz=UTC)
    assert event.payload == json.dumps(raw, separators=(",", ":"))
    assert event.bounce_type == ("hard" if nudge == "bounced" else None)
    assert event.is_machine_open is False


@pytest.mark.parametrize(
    ("resend", "nudge"),
    [("Permanent", "hard"), ("Transient", "soft"), ("Undetermined", "undetermined")],
)
def test_bounce_types(settings: WebhookSettings, resend: str, nudge: str) -> None:
    raw = resend_event("email.bounced")
    raw["data"]["bounce"]["type"] = resend
    assert post(settings, raw).events[0].bounce_type == nudge


def test_clicks_carry_the_link_and_their_own_time(settings: WebhookSettings) -> None:
    raw = resend_event("email.clicked", timestamp=NOW)
    raw["created_at"] = iso(NOW + 5)  # emitted a little after the click
    (event,) = post(settings, raw).events
    assert event.url == "https://shop.example/welcome?utm_source=nudge"
    assert event.occurred_at == datetime.fromtimestamp(NOW, tz=UTC)


def test_tags_as_a_list_of_name_value_pairs_work_too(settings: WebhookSettings) -> None:
    raw = resend_event("email.delivered", send_id="send-0009", tags_as_list=True)
    assert post(settings, raw).events[0].send_id == "send-0009"
    untagged = resend_event("email.delivered", send_id=None, tags={})
    assert post(settings, untagged).events[0].send_id is None


@pytest.mark.parametrize(
    "event",
    [
        resend_event("email.sent"),
        resend_event("email.scheduled"),
        {"type": "contact.created", "created_at": iso(NOW), "data": {"id": "c1"}},
        {"type": "email.delivered", "data": {"to": ["a@example.com"]}},  # no created_at
        {"type": "email.delivered", "created_at": "soon", "data": {}},
    ],
)
def test_events_nudge_does_not_track_are_counted(
    settings: WebhookSettings, event: dict[str, Any]
) -> None:
    assert post(settings, event) == Parsed(events=[], ignored=1)


def test_duplicates_share_an_event_id(settings: WebhookSettings) -> None:
    raw = resend_event("email.opened")
    first = post(settings, raw).events
    retried = post(settings, raw, signed_at=NOW + 120, now=NOW + 120).events
    assert retried[0].event_id == first[0].event_id


def test_the_wall_clock_does_not_matter_only_now(settings: WebhookSettings) -> None:
    # Svix's own verify() would refuse this: NOW is not the wall clock.
    long_ago = 1_500_000_000.0
    assert len(
        post(settings, resend_event("email.opened"), signed_at=long_ago, now=long_ago).events
    )
    current = time.time()
    assert len(post(settings, resend_event("email.opened"), signed_at=current, now=current).events)


def test_any_of_several_signatures_may_match(settings: WebhookSettings) -> None:
    body = json_body(resend_event("email.delivered"))
    good = svix_headers(RESEND_SECRET, body, MSG_ID, NOW)
    stale = svix_headers(svix_secret(), body, MSG_ID, NOW)["svix-signature"]
    good["svix-signature"] = f"v2,abc {stale} junk {good['svix-signature']}"
    assert len(receive("resend", good, body, settings, now=NOW).events) == 1


# -- refusals ------------------------------------------------------------------------------


def test_missing_svix_headers_are_401(settings: WebhookSettings) -> None:
    body = json_body(resend_event("email.delivered"))
    headers = svix_headers(RESEND_SECRET, body, MSG_ID, NOW)
    for name in list(headers):
        partial = {k: v for k, v in headers.items() if k != name}
        assert rejected(settings, partial, body).status == 401


def test_a_signature_with_another_secret_is_403(settings: WebhookSettings) -> None:
    body = json_body(resend_event("email.delivered"))
    error = rejected(settings, svix_headers(svix_secret(), body, MSG_ID, NOW), body)
    assert error.status == 403
    assert RESEND_SECRET not in error.reason


def test_a_tampered_body_or_id_is_403(settings: WebhookSettings) -> None:
    body = json_body(resend_event("email.delivered", send_id="send-0001"))
    headers = svix_headers(RESEND_SECRET, body, MSG_ID, NOW)
    assert rejected(settings, headers, body.replace(b"send-0001", b"send-0666")).status == 403
    assert rejected(settings, {**headers, "svix-id": "msg_other"}, body).status == 403
    assert rejected(settings, headers, body + b"\xff").status == 403


@pytest.mark.parametrize("offset", [-301, 301])
def test_stale_and_future_timestamps_are_403(settings: WebhookSettings, offset: int) -> None:
    body = json_body(resend_event("email.delivered"))
    error = rejected(settings, svix_headers(RESEND_SECRET, body, MSG_ID, NOW + offset), body)
    assert error.status == 403
    assert "tolerance" in error.reason


def test_truncated_json_with_a_valid_signature_is_400(settings: WebhookSettings) -> None:
    for body in (json_body(resend_event("email.delivered"))[:-3], b"[1, 2]"):
        assert (
            rejected(settings, svix_headers(RESEND_SECRET, body, MSG_ID, NOW), body).status == 400
        )


def test_not_configured_is_503() -> None:
    body = json_body(resend_event("email.delivered"))
    error = rejected(WebhookSettings(), svix_headers(RESEND_SECRET, body, MSG_ID, NOW), body)
    assert error.status == 503
    assert error.reason == "the resend webhook is not configured: set NUDGE_RESEND_WEBHOOK_SECRET"


def test_a_secret_svix_cannot_read_is_503() -> None:
    body = json_body(resend_event("email.delivered"))
    headers = svix_headers(RESEND_SECRET, body, MSG_ID, NOW)
    for secret in ("whsec_", "whsec_a"):
        error = rejected(WebhookSettings(resend_secret=secret), headers, body)
        assert error.status == 503
