"""Verifying Amazon SNS HTTP(S) messages, without a third-party validator.

Docs:

* https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
* https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html
* https://docs.aws.amazon.com/sns/latest/dg/sns-message-delivery-retries.html

SNS signs the JSON document it POSTs, not the request: ``Signature`` is the base64 RSA
(PKCS#1 v1.5) signature of a canonical string, with SHA-1 for ``SignatureVersion`` "1" and
SHA-256 for "2". The canonical string is ``"<Key>\\n<Value>\\n"`` for each of these keys, in
this order, skipping absent ones:

* ``Notification``: Message, MessageId, Subject (only if present), Timestamp, TopicArn, Type
* ``SubscriptionConfirmation`` / ``UnsubscribeConfirmation``: Message, MessageId,
  SubscribeURL, Timestamp, Token, TopicArn, Type

The public key is in the X.509 certificate at ``SigningCertURL``, so that URL is the trust
anchor and is checked before anything is fetched: https, a host of the form
``sns.<region>.amazonaws.com`` (or ``.amazonaws.com.cn``), a path ending ``.pem``. Fetching it
over verified TLS from that host is what ties the certificate to AWS (the AWS SDKs'
validators do the same); its validity period is checked against ``now``. Certificates are
cached in-process by URL: SNS signs every message of a region with the same one.

Only topics listed in ``NUDGE_SES_TOPIC_ARNS`` are accepted: anyone can create an SNS topic
and subscribe nudge's URL to it, and its messages would carry a perfectly valid signature.

Why an hour of tolerance. SNS signs a message once, when it publishes it; every retry
re-delivers the same signed document with the original ``Timestamp``. The default HTTP/S
delivery policy retries 3 times, 20 s apart, but a subscription's policy can stretch
retries up to SNS's hard limit of 3,600 s in total. Refusing older messages with the 5-minute
window of the other providers would throw away legitimate late retries (SNS then drops the
message for good), while a replay inside the hour is harmless: events deduplicate on the SNS
``MessageId``. A message more than ``tolerance_seconds`` in the future is refused too.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dagster_project.webhooks.base import Rejected
from dagster_project.webhooks.common import parse_iso

Fetch = Callable[[str], bytes]

SNS_MAX_AGE_SECONDS = 3600
FETCH_TIMEOUT_SECONDS = 5.0
CACHE_SIZE = 32

MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# The pattern the AWS SDKs' message validators use for the signing host.
_SNS_HOST = re.compile(r"^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$")

_cache: OrderedDict[str, x509.Certificate] = OrderedDict()
_cache_lock = threading.Lock()


def is_sns_url(url: Any, *, pem: bool = False) -> bool:
    """Whether ``url`` is https on an SNS host (and, with ``pem``, names a ``.pem`` file)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or parts.username or parts.password or port not in (None, 443):
        return False
    if not _SNS_HOST.match(parts.hostname or ""):
        return False
    return not pem or (parts.path.endswith(".pem") and not parts.query and not parts.fragment)


def http_get(url: str) -> bytes:
    """GET ``url`` over verified TLS with a short timeout (the default certificate fetcher)."""
    response = httpx.get(url, timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)
    response.raise_for_status()
    return response.content


def clear_certificate_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _certificate(url: str, fetch: Fetch) -> x509.Certificate:
    with _cache_lock:
        cached = _cache.get(url)
        if cached is not None:
            _cache.move_to_end(url)
            return cached
    # Fetched outside the lock: a slow fetch must not hold up other requests. Two threads may
    # fetch the same URL once each; both get the same certificate.
    try:
        pem = fetch(url)
    except Exception:
        raise Rejected(503, "could not fetch the SNS signing certificate") from None
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError):
        raise Rejected(403, "the SNS signing certificate is not a PEM certificate") from None
    with _cache_lock:
        _cache[url] = certificate
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return certificate


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signs for this message (see the module docstring)."""
    keys = NOTIFICATION_KEYS if message.get("Type") == "Notification" else CONFIRMATION_KEYS
    return "".join(
        f"{key}\n{message[key]}\n" for key in keys if message.get(key) is not None
    ).encode("utf-8")


def _check_shape(message: Any, header_type: str | None) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise Rejected(400, "expected an SNS message (a JSON object)")
    kind = message.get("Type")
    if kind not in MESSAGE_TYPES:
        raise Rejected(400, "not an SNS message: unknown Type")
    if header_type is not None and header_type != kind:
        raise Rejected(400, "x-amz-sns-message-type does not match the message's Type")
    required = ["Message", "MessageId", "Timestamp", "TopicArn"]
    if kind != "Notification":
        required += ["SubscribeURL", "Token"]
    if any(not isinstance(message.get(key), str) for key in required):
        raise Rejected(400, f"the SNS {kind} lacks a required field")
    if message.get("Subject") is not None and not isinstance(message["Subject"], str):
        raise Rejected(400, "the SNS Subject is not a string")
    return message


def verify_message(
    message: Any,
    *,
    header_type: str | None,
    topic_arns: tuple[str, ...],
    now: float,
    future_tolerance: float,
    fetch: Fetch,
) -> dict[str, Any]:
    """The message, once its topic, age, certificate and signature are all right.

    Cheap checks first: nothing is fetched for a message from a foreign topic, a stale one,
    or one whose certificate URL is not SNS's.
    """
    message = _check_shape(message, header_type)
    signature = message.get("Signature")
    version = message.get("SignatureVersion")
    cert_url = message.get("SigningCertURL")
    if not signature or not version or not cert_url:
        raise Rejected(401, "the SNS message is not signed")
    if message["TopicArn"] not in topic_arns:
        raise Rejected(403, "the SNS topic is not one of NUDGE_SES_TOPIC_ARNS")
    sent_at = parse_iso(message["Timestamp"])
    if sent_at is None:
        raise Rejected(400, "the SNS Timestamp is not an ISO-8601 time")
    age = now - sent_at.timestamp()
    if age > SNS_MAX_AGE_SECONDS or age < -future_tolerance:
        raise Rejected(403, "the SNS Timestamp is outside the 3600 s window (stale or future)")
    if str(version) not in HASHES:
        raise Rejected(403, "unsupported SNS SignatureVersion")
    if not is_sns_url(cert_url, pem=True):
        raise Rejected(403, "SigningCertURL is not an https .pem URL on an SNS host")
    certificate = _certificate(cert_url, fetch)
    moment = datetime.fromtimestamp(now, tz=UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise Rejected(403, "the SNS signing certificate is expired or not yet valid")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected(403, "the SNS signing certificate does not hold an RSA key")
    try:
        key.verify(
            base64.b64decode(str(signature), validate=True),
            string_to_sign(message),
            padding.PKCS1v15(),
            HASHES[str(version)](),
        )
    except (InvalidSignature, ValueError, binascii.Error):
        raise Rejected(403, "the SNS signature does not match") from None
    return message


def confirm_subscription(url: str, fetch: Fetch = http_get) -> None:
    """Confirm an SNS subscription by GETting its ``SubscribeURL``.

    Refuses (``ValueError``) any URL that is not https on an SNS host: the URL comes from a
    request body, and nudge must not be made to GET arbitrary addresses.
    """
    if not is_sns_url(url):
        raise ValueError("not an https URL on an SNS host")
    fetch(url)
