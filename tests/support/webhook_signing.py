"""Sign provider webhooks exactly as the providers do, and build their documented payloads.

For the webhook tests (``tests/webhooks``) and the end-to-end tests of the web service: real
signatures made with keys generated here, never canned strings.

* SendGrid: an ECDSA P-256 key pair (:func:`sendgrid_keypair`); :func:`sign_sendgrid` signs
  ``timestamp + body`` and returns the two ``X-Twilio-Email-Event-Webhook-*`` headers.
* SNS (SES events): a self-signed RSA certificate (:func:`sns_certificate`) that a
  :class:`CertificateFetcher` serves to the verifier; :func:`sign_sns` signs a message with
  SignatureVersion 1 (SHA-1) or 2 (SHA-256) over SNS's canonical string.
* Resend: :func:`svix_headers` signs with Svix's own ``Webhook.sign``.
* nudge's own webhook: :func:`nudge_headers` (``X-Nudge-Timestamp`` / ``X-Nudge-Signature``).
* Postmark: :func:`postmark_auth`, the Basic ``Authorization`` header.

The payload builders (:func:`sendgrid_event`, :func:`postmark_record`, :func:`ses_event`,
:func:`resend_event`, :func:`nudge_event`) follow each provider's documented examples field
for field, carrying nudge's send_id where the provider echoes it back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from svix.webhooks import Webhook

from dagster_project.providers.webhook import sign_webhook_body
from dagster_project.webhooks.sns import string_to_sign

# 2026-01-01T00:00:00Z: the fixed "now" the tests verify against.
NOW = 1_767_225_600.0
SES_REGION = "eu-west-1"
SES_TOPIC_ARN = f"arn:aws:sns:{SES_REGION}:123456789012:nudge-ses-events"
SNS_CERT_URL = (
    f"https://sns.{SES_REGION}.amazonaws.com/"
    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)
SUBSCRIBE_URL = (
    f"https://sns.{SES_REGION}.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={SES_TOPIC_ARN}&Token=2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a"
)
SENDER = "Nudge Team <hello@nudge.example>"


def iso(timestamp: float) -> str:
    """``timestamp`` as the providers write it: ISO-8601 UTC with milliseconds and ``Z``."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _stable_id(*parts: Any) -> str:
    """An id that is the same for the same arguments (so duplicates are duplicates)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def _uuid(*parts: Any) -> str:
    """A UUID that is the same for the same arguments."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16]))


# -- SendGrid --------------------------------------------------------------------------------


def sendgrid_keypair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A fresh key pair: the private key, and the public key as SendGrid shows it (base64
    DER SubjectPublicKeyInfo), the value of ``NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY``."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_key, base64.b64encode(der).decode("ascii")


def sign_sendgrid(
    private_key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int | float
) -> dict[str, str]:
    """The signature headers SendGrid sends with ``body`` signed at ``timestamp``."""
    stamp = str(int(timestamp))
    signature = private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def sendgrid_event(
    event: str,
    *,
    email: str = "customer1@example.com",
    send_id: str | None = "send-0001",
    timestamp: float = NOW,
    sg_event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One Event Webhook object as SendGrid documents it, with nudge's custom_args
    (send_id, trigger, step) echoed as top-level keys. ``fields`` add or override keys
    (e.g. ``type="blocked"``, ``url=...``, ``sg_machine_open=True``)."""
    item: dict[str, Any] = {
        "email": email,
        "timestamp": int(timestamp),
        "smtp-id": f"<{_stable_id(send_id, email)}@nudge.example>",
        "event": event,
        "category": ["welcome"],
        "sg_event_id": sg_event_id or _stable_id("sendgrid", event, email, timestamp, send_id),
        "sg_message_id": f"{_stable_id(send_id)}.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C",
    }
    if send_id is not None:
        item.update(send_id=send_id, trigger="welcome", step="day0")
    extra: dict[str, dict[str, Any]] = {
        "delivered": {"ip": "168.1.1.1", "response": "250 OK", "tls": 1},
        "deferred": {"ip": "168.1.1.1", "response": "400 try again later", "attempt": "5"},
        "bounce": {
            "ip": "168.1.1.1",
            "reason": "500 unknown recipient",
            "status": "5.0.0",
            "type": "bounce",
            "bounce_classification": "Invalid Address",
            "tls": 1,
        },
        "dropped": {"reason": "Bounced Address", "status": "5.0.0"},
        "open": {
            "useragent": "Mozilla/5.0 (Windows NT 5.1) AppleWebKit/537.36 (KHTML, like Gecko)",
            "ip": "255.255.255.255",
            "sg_machine_open": False,
        },
        "click": {
            "useragent": "Mozilla/5.0 (Windows NT 5.1) AppleWebKit/537.36 (KHTML, like Gecko)",
            "ip": "255.255.255.255",
            "url": "https://shop.example/welcome?utm_source=nudge",
            "url_offset": {"index": 0, "type": "html"},
        },
        "group_unsubscribe": {"asm_group_id": 10, "useragent": "Mozilla/5.0", "ip": "1.2.3.4"},
        "group_resubscribe": {"asm_group_id": 10, "useragent": "Mozilla/5.0", "ip": "1.2.3.4"},
    }
    item.update(extra.get(event, {}))
    item.update(fields)
    return item


# -- SNS / SES -------------------------------------------------------------------------------


def sns_certificate(
    *,
    key: rsa.RSAPrivateKey | None = None,
    not_before: float = NOW - 86_400,
    not_after: float = NOW + 365 * 86_400,
) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A self-signed certificate standing in for SNS's: (its private key, the PEM)."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.fromtimestamp(not_before, tz=UTC))
        .not_valid_after(datetime.fromtimestamp(not_after, tz=UTC))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


def sign_sns(
    message: Mapping[str, Any], key: rsa.RSAPrivateKey, version: int | str = 1
) -> dict[str, Any]:
    """``message`` signed as SNS signs it (SignatureVersion 1: SHA-1, 2: SHA-256)."""
    signed = dict(message)
    signed["SignatureVersion"] = str(version)
    algorithm: hashes.HashAlgorithm = hashes.SHA1() if str(version) == "1" else hashes.SHA256()
    signature = key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
    signed["Signature"] = base64.b64encode(signature).decode("ascii")
    return signed


def sns_notification(
    ses_record: Mapping[str, Any] | str,
    *,
    timestamp: float = NOW,
    topic_arn: str = SES_TOPIC_ARN,
    message_id: str | None = None,
    cert_url: str = SNS_CERT_URL,
    subject: str | None = None,
) -> dict[str, Any]:
    """An unsigned SNS ``Notification`` carrying an SES event record (sign it with
    :func:`sign_sns`). The same arguments give the same ``MessageId``, as an SNS retry does."""
    message = ses_record if isinstance(ses_record, str) else json.dumps(ses_record)
    notification: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id or _uuid(message),
        "TopicArn": topic_arn,
        "Message": message,
        "Timestamp": iso(timestamp),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": (
            f"https://sns.{SES_REGION}.amazonaws.com/?Action=Unsubscribe"
            f"&SubscriptionArn={topic_arn}:c9135db0-26c4-47ec-8998-413945fb5a96"
        ),
    }
    if subject is not None:
        notification["Subject"] = subject
    return notification


def sns_confirmation(
    kind: str = "SubscriptionConfirmation",
    *,
    timestamp: float = NOW,
    topic_arn: str = SES_TOPIC_ARN,
    subscribe_url: str = SUBSCRIBE_URL,
    cert_url: str = SNS_CERT_URL,
) -> dict[str, Any]:
    """An unsigned ``SubscriptionConfirmation`` (or ``UnsubscribeConfirmation``)."""
    return {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a",
        "TopicArn": topic_arn,
        "Message": (
            f"You have chosen to subscribe to the topic {topic_arn}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": subscribe_url,
        "Timestamp": iso(timestamp),
        "SigningCertURL": cert_url,
    }


def sns_request(message: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the POST SNS makes for ``message``."""
    headers = {
        "x-amz-sns-message-type": str(message.get("Type")),
        "x-amz-sns-message-id": str(message.get("MessageId")),
        "x-amz-sns-topic-arn": str(message.get("TopicArn")),
        "Content-Type": "text/plain; charset=UTF-8",
        "User-Agent": "Amazon Simple Notification Service Agent",
    }
    return headers, json.dumps(message).encode("utf-8")


class CertificateFetcher:
    """Serves certificates by URL to the SNS verifier and records every URL it was asked."""

    def __init__(self, certificates: Mapping[str, bytes] | None = None) -> None:
        self.certificates = dict(certificates or {})
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if url not in self.certificates:
            raise OSError(f"404 for {url}")
        return self.certificates[url]


def ses_event(
    event_type: str,
    *,
    email: str | list[str] = "customer1@example.com",
    send_id: str | None = "send-0001",
    timestamp: float = NOW,
    tags: bool = True,
    send_id_header: bool = True,
    notification_format: bool = False,
    **detail: Any,
) -> dict[str, Any]:
    """An SES event record as SES publishes it to SNS (``eventType``; with
    ``notification_format`` the older identity notifications' ``notificationType``).

    ``send_id`` rides as the ``send_id`` message tag (``tags``) and as the
    ``X-Nudge-Send-Id`` header (``send_id_header``), as nudge's SES provider sends them.
    ``detail`` overrides keys of the event's own object (``bounce``, ``click``...).
    """
    recipients = [email] if isinstance(email, str) else list(email)
    sent_at = iso(timestamp - 60)
    at = iso(timestamp)
    message_id = f"0102019{_stable_id(send_id, recipients)[:12].lower()}-000000"
    headers = [
        {"name": "From", "value": SENDER},
        {"name": "To", "value": ", ".join(recipients)},
        {"name": "Subject", "value": "Welcome aboard"},
        {"name": "MIME-Version", "value": "1.0"},
        {"name": "Content-Type", "value": 'multipart/alternative; boundary="XBoundary"'},
    ]
    if send_id is not None and send_id_header:
        headers.append({"name": "X-Nudge-Send-Id", "value": send_id})
    mail: dict[str, Any] = {
        "timestamp": sent_at,
        "source": SENDER,
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/nudge.example",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": recipients,
        "headersTruncated": False,
        "headers": headers,
        "commonHeaders": {
            "from": [SENDER],
            "to": recipients,
            "messageId": message_id,
            "subject": "Welcome aboard",
        },
    }
    if tags and not notification_format:
        mail["tags"] = {
            "ses:configuration-set": ["nudge"],
            "ses:source-ip": ["192.0.2.0"],
            "ses:from-domain": ["nudge.example"],
            "ses:caller-identity": ["nudge"],
        }
        if send_id is not None:
            mail["tags"].update(send_id=[send_id], trigger=["welcome"], step=["day0"])
    objects: dict[str, tuple[str, dict[str, Any]]] = {
        "Delivery": (
            "delivery",
            {
                "timestamp": at,
                "processingTimeMillis": 546,
                "recipients": recipients,
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            },
        ),
        "Bounce": (
            "bounce",
            {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": r,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                    for r in recipients
                ],
                "timestamp": at,
                "feedbackId": "0102017ea9f5a4c2-fb2b5bd2-3a3d-4f4c-9a5b-6f1e1b3c2d4e-000000",
                "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
            },
        ),
        "Complaint": (
            "complaint",
            {
                "complainedRecipients": [{"emailAddress": r} for r in recipients],
                "timestamp": at,
                "feedbackId": "0102017ea9f5a4c2-ab2b5bd2-3a3d-4f4c-9a5b-6f1e1b3c2d4e-000000",
                "userAgent": "ExampleCorp Feedback Loop (V0.01)",
                "complaintFeedbackType": "abuse",
                "arrivalDate": at,
            },
        ),
        "DeliveryDelay": (
            "deliveryDelay",
            {
                "timestamp": at,
                "delayType": "TransientCommunicationFailure",
                "expirationTime": iso(timestamp + 3600),
                "delayedRecipients": [
                    {
                        "emailAddress": r,
                        "status": "4.4.1",
                        "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                    }
                    for r in recipients
                ],
            },
        ),
        "Reject": ("reject", {"reason": "Bad content"}),
        "Open": (
            "open",
            {
                "ipAddress": "192.0.2.1",
                "timestamp": at,
                "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)",
            },
        ),
        "Click": (
            "click",
            {
                "ipAddress": "192.0.2.1",
                "link": "https://shop.example/welcome?utm_source=nudge",
                "linkTags": {"samplekey0": ["samplevalue0"]},
                "timestamp": at,
                "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
            },
        ),
        "Subscription": (
            "subscription",
            {
                "contactList": "nudge-customers",
                "timestamp": at,
                "source": "UnsubscribeHeader",
                "newTopicPreferences": {
                    "unsubscribeAll": True,
                    "topicSubscriptionStatus": [
                        {"topicName": "marketing", "subscriptionStatus": "OptOut"}
                    ],
                },
                "oldTopicPreferences": {
                    "unsubscribeAll": False,
                    "topicSubscriptionStatus": [
                        {"topicName": "marketing", "subscriptionStatus": "OptIn"}
                    ],
                },
            },
        ),
        "Send": ("send", {}),
        "Rendering Failure": (
            "failure",
            {
                "errorMessage": "Attribute 'name' is not present in the rendering data.",
                "templateName": "welcome",
            },
        ),
    }
    record: dict[str, Any] = {
        "notificationType" if notification_format else "eventType": event_type,
        "mail": mail,
    }
    if event_type in objects:
        key, body = objects[event_type]
        record[key] = {**body, **detail}
    return record


# -- Resend ----------------------------------------------------------------------------------


def svix_secret() -> str:
    """A fresh Svix signing secret, as Resend shows it (``whsec_`` + base64)."""
    return "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes[:8]).decode()


def svix_headers(secret: str, body: bytes, msg_id: str, timestamp: int | float) -> dict[str, str]:
    """The ``svix-*`` headers Resend sends with ``body``, signed by Svix's own code."""
    signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(timestamp)),
        "svix-signature": Webhook(secret).sign(msg_id, signed_at, body.decode("utf-8")),
    }


def resend_event(
    event_type: str,
    *,
    email: str = "customer1@example.com",
    send_id: str | None = "send-0001",
    timestamp: float = NOW,
    tags_as_list: bool = False,
    **data: Any,
) -> dict[str, Any]:
    """A Resend webhook event shaped as resend.yaml's ``webhooks:`` schemas (``tags`` an
    object of strings there; ``tags_as_list`` gives the ``[{name, value}]`` form instead).
    ``data`` adds or overrides keys of ``data`` (``bounce``, ``click``...)."""
    tag_values = {"send_id": send_id, "trigger": "welcome", "step": "day0"}
    tags = {k: v for k, v in tag_values.items() if v is not None}
    payload: dict[str, Any] = {
        "email_id": _uuid(send_id, email),
        "created_at": iso(timestamp - 60),
        "from": SENDER,
        "to": [email],
        "subject": "Welcome aboard",
        "tags": [{"name": k, "value": v} for k, v in tags.items()] if tags_as_list else tags,
    }
    details: dict[str, dict[str, Any]] = {
        "email.bounced": {
            "bounce": {
                "diagnosticCode": ["smtp; 550 5.1.1 user unknown"],
                "message": "The recipient's email address does not exist.",
                "subType": "General",
                "type": "Permanent",
            }
        },
        "email.clicked": {
            "click": {
                "ipAddress": "122.115.53.11",
                "link": "https://shop.example/welcome?utm_source=nudge",
                "timestamp": iso(timestamp),
                "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
            }
        },
        "email.failed": {"failed": {"reason": "reached_daily_quota"}},
        "email.suppressed": {
            "suppressed": {
                "diagnosticCode": [],
                "message": "The address is on the account's suppression list.",
                "reason": "previous_bounce",
                "type": "OnAccountSuppressionList",
            }
        },
    }
    payload.update(details.get(event_type, {}))
    payload.update(data)
    return {"type": event_type, "created_at": iso(timestamp), "data": payload}


# -- Postmark --------------------------------------------------------------------------------


def postmark_auth(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header Postmark sends for ``https://user:password@host/...``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


# Type -> (TypeCode, Name), from Postmark's bounce-types table.
POSTMARK_BOUNCE_TYPES = {
    "HardBounce": (1, "Hard bounce"),
    "Transient": (2, "Message delayed"),
    "Unsubscribe": (16, "Unsubscribe request"),
    "AutoResponder": (64, "Auto responder"),
    "AddressChange": (128, "Address change"),
    "DnsError": (256, "DNS error"),
    "OpenRelayTest": (1024, "Open relay test"),
    "Unknown": (2048, "Unknown"),
    "SoftBounce": (4096, "Soft bounce"),
    "BadEmailAddress": (100000, "Invalid email address"),
    "SpamComplaint": (100001, "Spam complaint"),
    "ManuallyDeactivated": (100002, "Manually deactivated"),
    "Blocked": (100006, "ISP block"),
    "SMTPApiError": (100007, "SMTP API error"),
}


def postmark_record(
    record_type: str,
    *,
    email: str = "customer1@example.com",
    send_id: str | None = "send-0001",
    timestamp: float = NOW,
    **fields: Any,
) -> dict[str, Any]:
    """A Postmark webhook record as its docs show it, with nudge's ``Metadata`` (send_id,
    trigger, step) and ``Tag`` (the trigger). ``fields`` add or override keys (``Type`` of a
    bounce, ``SuppressionReason``...)."""
    at = iso(timestamp)
    message_id = _uuid(send_id, email)
    metadata = {"send_id": send_id, "trigger": "welcome", "step": "day0"} if send_id else {}
    common: dict[str, Any] = {
        "RecordType": record_type,
        "MessageStream": "outbound",
        "MessageID": message_id,
        "ServerID": 23,
        "Tag": "welcome",
        "Metadata": metadata,
    }
    client = {
        "Client": {"Name": "Chrome 119.0", "Company": "Google", "Family": "Chrome"},
        "OS": {"Name": "OS X 10.15 Catalina", "Company": "Apple Computer, Inc.", "Family": "OS X"},
        "UserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
        "Geo": {
            "CountryISOCode": "FR",
            "Country": "France",
            "RegionISOCode": "IDF",
            "Region": "Ile-de-France",
            "City": "Paris",
            "Zip": "75001",
            "Coords": "48.8566,2.3522",
            "IP": "192.0.2.7",
        },
    }
    if record_type == "Delivery":
        record = {
            **common,
            "Recipient": email,
            "DeliveredAt": at,
            "Details": "smtp;250 2.0.0 OK 1480624905 l186si10190883ite.73 - gsmtp",
        }
    elif record_type in ("Bounce", "SpamComplaint"):
        kind = fields.pop("Type", "HardBounce" if record_type == "Bounce" else "SpamComplaint")
        code, name = POSTMARK_BOUNCE_TYPES.get(kind, (2048, "Unknown"))
        record = {
            **common,
            "ID": int(hashlib.sha256(f"{kind}{email}{send_id}".encode()).hexdigest()[:9], 16),
            "Type": kind,
            "TypeCode": code,
            "Name": name,
            "Description": "The server was unable to deliver your message.",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": email,
            "From": "hello@nudge.example",
            "BouncedAt": at,
            "DumpAvailable": True,
            "Inactive": kind in ("HardBounce", "SpamComplaint", "BadEmailAddress"),
            "CanActivate": True,
            "Subject": "Welcome aboard",
            "Content": "Return-Path: <>\nReceived: ...",
        }
    elif record_type == "Open":
        record = {
            **common,
            **client,
            "FirstOpen": True,
            "Platform": "Desktop",
            "ReadSeconds": 5,
            "ReceivedAt": at,
            "Recipient": email,
        }
    elif record_type == "Click":
        record = {
            **common,
            **client,
            "ClickLocation": "HTML",
            "Platform": "Desktop",
            "OriginalLink": "https://shop.example/welcome?utm_source=nudge",
            "ReceivedAt": at,
            "Recipient": email,
        }
    elif record_type == "SubscriptionChange":
        record = {
            **common,
            "ChangedAt": at,
            "Recipient": email,
            "Origin": "Recipient",
            "SuppressSending": True,
            "SuppressionReason": "ManualSuppression",
        }
    else:
        record = {**common, "Recipient": email, "ReceivedAt": at}
    record.update(fields)
    return record


# -- nudge's own webhook ---------------------------------------------------------------------


def nudge_headers(secret: str, body: bytes, timestamp: int | float) -> dict[str, str]:
    """``X-Nudge-Timestamp`` and ``X-Nudge-Signature`` for ``body`` signed at ``timestamp``."""
    stamp = int(timestamp)
    return {
        "X-Nudge-Timestamp": str(stamp),
        "X-Nudge-Signature": sign_webhook_body(secret, body, stamp),
    }


def nudge_event(
    event_type: str,
    *,
    event_id: str | None = None,
    email: str | None = "customer1@example.com",
    send_id: str | None = "send-0001",
    timestamp: float = NOW,
    **fields: Any,
) -> dict[str, Any]:
    """One event of nudge's own webhook format (``dagster_project.webhooks.nudge``)."""
    item: dict[str, Any] = {
        "event_id": event_id or f"evt-{_stable_id(event_type, email, send_id, timestamp)}",
        "send_id": send_id,
        "type": event_type,
        "occurred_at": datetime.fromtimestamp(timestamp, tz=UTC).isoformat(),
    }
    if email is not None:
        item["email"] = email
    item.update(fields)
    return item


def json_body(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8")
