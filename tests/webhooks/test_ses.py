"""SES events over SNS: signatures verified against a self-signed certificate that a test
fetcher serves, for SignatureVersion 1 (SHA-1) and 2 (SHA-256)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from dagster_project.webhooks import Parsed, Rejected, WebhookSettings, receive, sns
from dagster_project.webhooks.ses import confirm_subscription
from tests.support.webhook_signing import (
    NOW,
    SES_TOPIC_ARN,
    SNS_CERT_URL,
    SUBSCRIBE_URL,
    CertificateFetcher,
    ses_event,
    sign_sns,
    sns_certificate,
    sns_confirmation,
    sns_notification,
    sns_request,
)

VERSIONS = ["1", "2"]


def post(
    settings: WebhookSettings,
    message: dict[str, Any],
    fetcher: CertificateFetcher,
    *,
    now: float = NOW,
    headers: dict[str, str] | None = None,
) -> Parsed:
    default_headers, body = sns_request(message)
    return receive(
        "ses",
        default_headers if headers is None else headers,
        body,
        settings,
        now=now,
        fetch_certificate=fetcher,
    )


def rejected(
    settings: WebhookSettings, message: dict[str, Any], fetcher: CertificateFetcher, **kw: Any
) -> Rejected:
    with pytest.raises(Rejected) as caught:
        post(settings, message, fetcher, **kw)
    return caught.value


def notify(
    record: dict[str, Any] | str, key: rsa.RSAPrivateKey, version: str = "1", **kw: Any
) -> dict[str, Any]:
    return sign_sns(sns_notification(record, **kw), key, version)


# -- mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("ses", "nudge", "bounce_type"),
    [
        ("Delivery", "delivered", None),
        ("Bounce", "bounced", "hard"),
        ("Complaint", "complained", None),
        ("DeliveryDelay", "deferred", None),
        ("Reject", "dropped", None),
        ("Open", "opened", None),
        ("Click", "clicked", None),
        ("Subscription", "unsubscribed", None),
    ],
)
def test_each_event_type_maps(
    settings: WebhookSettings,
    sns_key: rsa.RSAPrivateKey,
    fetcher: CertificateFetcher,
    version: str,
    ses: str,
    nudge: str,
    bounce_type: str | None,
) -> None:
    record = ses_event(ses, send_id="send-0042", email="Ada@Example.COM")
    message = notify(record, sns_key, version)
    parsed = post(settings, message, fetcher)

    assert parsed.ignored == 0
    (event,) = parsed.events
    assert event.provider == "ses"
    assert event.event_type == nudge
    assert event.bounce_type == bounce_type
    assert event.send_id == "send-0042"
    assert event.email == "ada@example.com"
    assert event.provider_event_id == message["MessageId"]
    assert event.event_id == f"ses:{message['MessageId']}"
    assert event.payload == json.dumps(record, separators=(",", ":"))
    assert event.is_machine_open is False  # SES has no machine-open flag
    # A reject has no time of its own: the message's send time.
    expected = NOW - 60 if ses == "Reject" else NOW
    assert event.occurred_at == datetime.fromtimestamp(expected, tz=UTC)


@pytest.mark.parametrize(
    ("ses", "nudge"),
    [("Permanent", "hard"), ("Transient", "soft"), ("Undetermined", "undetermined")],
)
def test_bounce_types(
    settings: WebhookSettings,
    sns_key: rsa.RSAPrivateKey,
    fetcher: CertificateFetcher,
    ses: str,
    nudge: str,
) -> None:
    message = notify(ses_event("Bounce", bounceType=ses), sns_key)
    assert post(settings, message, fetcher).events[0].bounce_type == nudge


def test_clicks_carry_the_link(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    message = notify(ses_event("Click", link="https://shop.example/p/9"), sns_key, "2")
    assert post(settings, message, fetcher).events[0].url == "https://shop.example/p/9"


def test_one_event_per_bounced_recipient_each_with_its_own_stable_id(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    record = ses_event("Bounce", email=["a@example.com", "B@example.com"])
    message = notify(record, sns_key)
    events = post(settings, message, fetcher).events
    retried = post(settings, message, fetcher, now=NOW + 600).events

    assert [e.email for e in events] == ["a@example.com", "b@example.com"]
    assert [e.provider_event_id for e in events] == [
        f"{message['MessageId']}:0",
        f"{message['MessageId']}:1",
    ]
    assert [e.event_id for e in retried] == [e.event_id for e in events]


def test_send_id_comes_from_the_tag_else_the_header(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    def send_id(**kw: Any) -> str | None:
        message = notify(ses_event("Delivery", send_id="send-0007", **kw), sns_key)
        return post(settings, message, fetcher).events[0].send_id

    assert send_id() == "send-0007"
    assert send_id(send_id_header=False) == "send-0007"
    assert send_id(tags=False) == "send-0007"
    assert send_id(tags=False, send_id_header=False) is None


def test_the_older_notification_format(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    record = ses_event("Bounce", notification_format=True, bounceType="Transient")
    assert "tags" not in record["mail"]
    (event,) = post(settings, notify(record, sns_key), fetcher).events
    assert (event.event_type, event.bounce_type, event.send_id) == ("bounced", "soft", "send-0001")


def test_a_subject_is_part_of_the_signature(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    message = notify(ses_event("Delivery"), sns_key, "2", subject="Amazon SES Email Event")
    assert len(post(settings, message, fetcher).events) == 1
    message["Subject"] = "Something else"
    assert rejected(settings, message, fetcher).status == 403


@pytest.mark.parametrize(
    "record",
    [
        ses_event("Send"),
        ses_event("Rendering Failure"),
        ses_event("SomethingNew"),
        ses_event("Complaint", complaintFeedbackType="not-spam"),
        ses_event(
            "Subscription",
            newTopicPreferences={
                "unsubscribeAll": False,
                "topicSubscriptionStatus": [
                    {"topicName": "marketing", "subscriptionStatus": "OptIn"}
                ],
            },
        ),
        ses_event("Delivery", timestamp=NOW) | {"delivery": {"recipients": ["a@example.com"]}},
        "a message published by hand, not JSON",
        json.dumps(["not", "an", "event"]),
    ],
)
def test_events_nudge_does_not_track_are_counted(
    settings: WebhookSettings,
    sns_key: rsa.RSAPrivateKey,
    fetcher: CertificateFetcher,
    record: dict[str, Any] | str,
) -> None:
    assert post(settings, notify(record, sns_key), fetcher) == Parsed(events=[], ignored=1)


def test_an_opt_out_of_one_topic_is_an_unsubscribe(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    opted_out = {"topicName": "marketing", "subscriptionStatus": "OptOut"}
    record = ses_event(
        "Subscription",
        newTopicPreferences={"unsubscribeAll": False, "topicSubscriptionStatus": [opted_out]},
    )
    (event,) = post(settings, notify(record, sns_key), fetcher).events
    assert event.event_type == "unsubscribed"


# -- subscription --------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_subscription_confirmation_returns_its_url(
    settings: WebhookSettings,
    sns_key: rsa.RSAPrivateKey,
    fetcher: CertificateFetcher,
    version: str,
) -> None:
    message = sign_sns(sns_confirmation(), sns_key, version)
    assert post(settings, message, fetcher) == Parsed(events=[], subscribe_url=SUBSCRIBE_URL)


def test_an_unsubscribe_confirmation_is_acknowledged(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    message = sign_sns(sns_confirmation("UnsubscribeConfirmation"), sns_key)
    assert post(settings, message, fetcher) == Parsed(events=[])


def test_a_subscribe_url_off_sns_is_403(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    evil = "https://evil.example/?Action=ConfirmSubscription"
    message = sign_sns(sns_confirmation(subscribe_url=evil), sns_key)
    assert rejected(settings, message, fetcher).status == 403


def test_confirm_subscription_gets_the_url_only_on_sns() -> None:
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        return b"<ConfirmSubscriptionResponse/>"

    confirm_subscription(SUBSCRIBE_URL, fetch)
    assert calls == [SUBSCRIBE_URL]
    for url in ("http://sns.eu-west-1.amazonaws.com/?Action=x", "https://evil.example/x"):
        with pytest.raises(ValueError):
            confirm_subscription(url, fetch)
    assert calls == [SUBSCRIBE_URL]


# -- the certificate -----------------------------------------------------------------------


def test_the_certificate_is_fetched_once_and_cached(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    post(settings, notify(ses_event("Delivery", send_id="send-0001"), sns_key), fetcher)
    post(settings, notify(ses_event("Open", send_id="send-0002"), sns_key, "2"), fetcher)
    assert fetcher.calls == [SNS_CERT_URL]


@pytest.mark.parametrize(
    "cert_url",
    [
        SNS_CERT_URL.replace("https://", "http://"),
        "https://evil.example/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example/SimpleNotificationService-1.pem",
        "https://s3.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.txt",
        "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.pem?redirect=https://evil.example/x.pem",
    ],
)
def test_a_certificate_url_off_sns_is_403_and_never_fetched(
    settings: WebhookSettings,
    sns_key: rsa.RSAPrivateKey,
    fetcher: CertificateFetcher,
    cert_url: str,
) -> None:
    fetcher.certificates[cert_url] = fetcher.certificates[SNS_CERT_URL]
    message = notify(ses_event("Delivery"), sns_key, cert_url=cert_url)
    error = rejected(settings, message, fetcher)
    assert error.status == 403
    assert "SigningCertURL" in error.reason
    assert fetcher.calls == []


def test_the_china_regions_host_is_accepted(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
    fetcher.certificates[url] = fetcher.certificates[SNS_CERT_URL]
    message = notify(ses_event("Delivery"), sns_key, cert_url=url)
    assert len(post(settings, message, fetcher).events) == 1
    assert fetcher.calls == [url]


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(NOW - 86_400 * 30, NOW - 1), (NOW + 60, NOW + 86_400)],
    ids=["expired", "not-yet-valid"],
)
def test_a_certificate_outside_its_validity_is_403(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, not_before: float, not_after: float
) -> None:
    _, pem = sns_certificate(key=sns_key, not_before=not_before, not_after=not_after)
    fetcher = CertificateFetcher({SNS_CERT_URL: pem})
    error = rejected(settings, notify(ses_event("Delivery"), sns_key), fetcher)
    assert error.status == 403
    assert "certificate" in error.reason


def test_a_certificate_that_cannot_be_fetched_is_503(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey
) -> None:
    error = rejected(settings, notify(ses_event("Delivery"), sns_key), CertificateFetcher())
    assert error.status == 503


def test_the_default_fetcher_gets_the_certificate_over_https(
    settings: WebhookSettings,
    sns_key: rsa.RSAPrivateKey,
    sns_pem: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requested: list[tuple[str, dict[str, Any]]] = []

    def get(url: str, **options: Any) -> httpx.Response:
        requested.append((url, options))
        status = 200 if url == SNS_CERT_URL else 404
        return httpx.Response(status, content=sns_pem, request=httpx.Request("GET", url))

    monkeypatch.setattr(sns.httpx, "get", get)
    _, body = sns_request(notify(ses_event("Delivery"), sns_key))
    assert len(receive("ses", {}, body, settings, now=NOW).events) == 1
    assert requested == [(SNS_CERT_URL, {"timeout": 5.0, "follow_redirects": False})]

    sns.clear_certificate_cache()
    moved = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-moved.pem"
    _, body = sns_request(notify(ses_event("Delivery"), sns_key, cert_url=moved))
    with pytest.raises(Rejected) as caught:
        receive("ses", {}, body, settings, now=NOW)
    assert caught.value.status == 503


def test_a_fetched_document_that_is_not_a_certificate_is_403(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey
) -> None:
    fetcher = CertificateFetcher({SNS_CERT_URL: b"<html>hello</html>"})
    assert rejected(settings, notify(ses_event("Delivery"), sns_key), fetcher).status == 403


# -- refusals ------------------------------------------------------------------------------


def test_a_foreign_topic_is_403_and_nothing_is_fetched(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    foreign = SES_TOPIC_ARN.replace("nudge-ses-events", "someone-elses-topic")
    error = rejected(settings, notify(ses_event("Delivery"), sns_key, topic_arn=foreign), fetcher)
    assert error.status == 403
    assert "topic" in error.reason
    assert fetcher.calls == []


@pytest.mark.parametrize("version", VERSIONS)
def test_a_signature_by_another_key_is_403(
    settings: WebhookSettings, fetcher: CertificateFetcher, version: str
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    error = rejected(settings, notify(ses_event("Delivery"), other, version), fetcher)
    assert error.status == 403
    assert "signature" in error.reason


@pytest.mark.parametrize("version", VERSIONS)
def test_a_tampered_message_is_403(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher, version: str
) -> None:
    message = notify(ses_event("Delivery", send_id="send-0001"), sns_key, version)
    message["Message"] = message["Message"].replace("send-0001", "send-0666")
    assert rejected(settings, message, fetcher).status == 403


def test_a_signature_made_with_the_other_hash_is_403(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    message = notify(ses_event("Delivery"), sns_key, "1")
    message["SignatureVersion"] = "2"
    assert rejected(settings, message, fetcher).status == 403


def test_an_unknown_signature_version_is_403(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    message = notify(ses_event("Delivery"), sns_key, "2")
    message["SignatureVersion"] = "3"
    assert rejected(settings, message, fetcher).status == 403
    assert fetcher.calls == []


@pytest.mark.parametrize("field", ["Signature", "SignatureVersion", "SigningCertURL"])
def test_an_unsigned_message_is_401(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher, field: str
) -> None:
    message = notify(ses_event("Delivery"), sns_key)
    del message[field]
    assert rejected(settings, message, fetcher).status == 401


@pytest.mark.parametrize("age", [3599, 60])
def test_retries_within_the_hour_are_accepted(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher, age: int
) -> None:
    # SNS re-delivers the document it signed at publication, Timestamp included.
    message = notify(ses_event("Delivery", timestamp=NOW - age), sns_key, timestamp=NOW - age)
    assert len(post(settings, message, fetcher).events) == 1


@pytest.mark.parametrize("offset", [-3601, -86_400, 301])
def test_stale_and_future_messages_are_403(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher, offset: int
) -> None:
    message = notify(ses_event("Delivery"), sns_key, timestamp=NOW + offset)
    error = rejected(settings, message, fetcher)
    assert error.status == 403
    assert "Timestamp" in error.reason
    assert fetcher.calls == []


def test_a_message_type_header_that_disagrees_is_400(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    message = notify(ses_event("Delivery"), sns_key)
    headers = {"X-Amz-Sns-Message-Type": "SubscriptionConfirmation"}
    assert rejected(settings, message, fetcher, headers=headers).status == 400
    # Without the header, the body alone decides.
    assert len(post(settings, message, fetcher, headers={}).events) == 1


def test_duplicates_share_event_ids(
    settings: WebhookSettings, sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher
) -> None:
    message = notify(ses_event("Open"), sns_key)
    first = post(settings, message, fetcher).events
    again = post(settings, message, fetcher, now=NOW + 1800).events
    assert [e.event_id for e in first] == [e.event_id for e in again]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(sns_notification(ses_event("Delivery"))).encode()[:-9],
        b"",
        b"[]",
        json.dumps({"Type": "Something", "Message": "x"}).encode(),
        json.dumps({"Type": "Notification", "Message": "x"}).encode(),
    ],
)
def test_an_unreadable_body_is_400(
    settings: WebhookSettings, fetcher: CertificateFetcher, body: bytes
) -> None:
    with pytest.raises(Rejected) as caught:
        receive("ses", {}, body, settings, now=NOW, fetch_certificate=fetcher)
    assert caught.value.status == 400
    assert fetcher.calls == []


def test_not_configured_is_503(sns_key: rsa.RSAPrivateKey, fetcher: CertificateFetcher) -> None:
    error = rejected(WebhookSettings(), notify(ses_event("Delivery"), sns_key), fetcher)
    assert error.status == 503
    assert error.reason == "the ses webhook is not configured: set NUDGE_SES_TOPIC_ARNS"
