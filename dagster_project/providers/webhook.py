"""Webhook adapter: POST the rendered messages as signed JSON to your own gateway.

For a custom sending service (an internal mail API, a queue, another ESP behind your own
code). Each request is::

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <batch key>[-<i>]        same key on every retry of the same request
    X-Nudge-Timestamp: 1767225600             Unix seconds when this attempt was signed
    X-Nudge-Signature: sha256=<hex>           HMAC-SHA256(secret, f"{timestamp}.{body}")

    {"messages": [{"send_id", "trigger", "step", "customer_id", "to", "from", "subject",
                   "html", "text", "custom_args"[, "headers"]}, ...]}

and the gateway answers 2xx, optionally with per-message outcomes::

    {"results": [{"send_id": "...", "status": "sent" | "failed", "error": "...",
                  "message_id": "...", "retryable": false}]}

A bare 2xx (or a send_id missing from ``results``) means accepted. Other answers follow the
shared HTTP policy (:mod:`.http`): 429 waits, 5xx retries, other 4xx fail the whole request.

``headers``, present only on a message that has extra headers, is an object of header name to
value (e.g. ``{"List-Unsubscribe": "<https://...>, <mailto:...>", "List-Unsubscribe-Post":
"List-Unsubscribe=One-Click"}``) that the gateway must put on the email exactly as given,
without re-encoding them. Values are one line of printable ASCII (a message whose headers
have a line break is never sent), and no name is one the gateway sets itself (``From``,
``To``, ``Subject``, ...); see ``base.checked_headers``.

The signature is Stripe-style: the timestamp is inside the signed text, so a captured request
cannot be replayed later than the receiver's tolerance, and each retry is signed afresh.
Receivers check it with :func:`verify_webhook_signature` (or its recipe in any language) over
the *raw* body bytes, before parsing them. The gateway should deduplicate on
``Idempotency-Key`` (or on send_id); only then construct the provider with
``idempotent=True``, which lets a request whose answer was lost be resent under the same key
instead of ending ``unknown``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from dagster_project.providers.base import (
    Message,
    ProviderConfigError,
    ProviderLimits,
    checked_headers,
)
from dagster_project.providers.http import (
    Delivery,
    HttpJsonProvider,
    RequestEntry,
)
from dagster_project.providers.redaction import (
    public_url,
    require_http_url,
)
from dagster_project.providers.wire import (
    json_or_none,
)

SIGNATURE_HEADER = "X-Nudge-Signature"
TIMESTAMP_HEADER = "X-Nudge-Timestamp"
DEFAULT_BATCH_SIZE = 100
DEFAULT_TOLERANCE_SECONDS = 300

# The request body, as a JSON Schema: the contract a gateway implements (tests validate every
# request against it).
WEBHOOK_REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["messages"],
    "additionalProperties": False,
    "properties": {
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "send_id",
                    "trigger",
                    "step",
                    "customer_id",
                    "to",
                    "from",
                    "subject",
                    "html",
                    "text",
                    "custom_args",
                ],
                "properties": {
                    "send_id": {"type": "string", "minLength": 1},
                    "trigger": {"type": "string"},
                    "step": {"type": "string"},
                    "customer_id": {"type": "string"},
                    "to": {"type": "string", "minLength": 3},
                    "from": {"type": "string", "minLength": 3},
                    "subject": {"type": "string"},
                    "html": {"type": "string"},
                    "text": {"type": "string"},
                    "custom_args": {"type": "object", "additionalProperties": {"type": "string"}},
                    # Only on messages that have extra headers (see the module docstring).
                    "headers": {
                        "type": "object",
                        "minProperties": 1,
                        "propertyNames": {"pattern": "^[!-9;-~]+$"},
                        "additionalProperties": {"type": "string", "pattern": "^[ -~\\t]+$"},
                    },
                },
            },
        }
    },
}


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret if isinstance(secret, bytes) else secret.encode("utf-8")


def sign_webhook_body(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Nudge-Signature`` value for ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    signed = str(int(timestamp)).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(_secret_bytes(secret), signed, hashlib.sha256).hexdigest()


def verify_webhook_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str | int | None,
    signature: str | None,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
    """True if ``signature`` is a valid signature of ``body`` made within the tolerance.

    For receivers: pass the raw body bytes and the ``X-Nudge-Timestamp`` and
    ``X-Nudge-Signature`` header values. ``signature`` may list several comma-separated
    ``sha256=`` values (e.g. while rotating secrets); one valid value is enough. The comparison
    is constant-time. A timestamp further than ``tolerance_seconds`` from ``now`` (either way)
    is refused, so a captured request cannot be replayed later.
    """
    if timestamp is None or not signature:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_seconds:
        return False
    expected = sign_webhook_body(secret, body, ts)
    candidates = [part.strip() for part in signature.split(",")]
    # Bytes, not str: compare_digest refuses non-ASCII text, and a header is the sender's.
    return any(
        hmac.compare_digest(expected.encode(), c.encode("utf-8", "replace"))
        for c in candidates
        if c.startswith("sha256=")
    )


def build_webhook_message(message: Message) -> dict[str, Any]:
    """One element of the request's ``messages`` array; ``ValueError`` if it cannot be sent."""
    if not message.to_email or "@" not in message.to_email:
        raise ValueError("to_email is not an email address")
    if not message.text and not message.html:
        raise ValueError("message has neither a text nor an HTML body")
    headers = dict(checked_headers(message.headers))
    custom_args = {str(k): str(v) for k, v in message.custom_args.items()}
    custom_args.update(send_id=message.send_id, trigger=message.trigger, step=message.step)
    item: dict[str, Any] = {
        "send_id": message.send_id,
        "trigger": message.trigger,
        "step": message.step,
        "customer_id": message.customer_id,
        "to": message.to_email,
        "from": message.from_email,
        "subject": message.subject,
        "html": message.html,
        "text": message.text,
        "custom_args": custom_args,
    }
    if headers:
        item["headers"] = headers
    return item


class WebhookProvider(HttpJsonProvider):
    """POST rendered messages, HMAC-signed, to a gateway of your own."""

    name = "webhook"
    display_name = "the webhook"
    secret_label = "secret"

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        idempotent: bool = False,
        timeout: float = 10.0,
        max_concurrency: int = 8,
        max_attempts: int = 5,
        requests_per_second: float | None = None,
        max_rate_limit_wait: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Create the provider; raises :class:`ProviderConfigError` before any send if unusable.

        ``idempotent``: set it only if the gateway deduplicates on ``Idempotency-Key``.
        ``wall_clock`` gives the signature's timestamp (injectable for tests).
        """
        parsed = require_http_url(url, "Webhook URL", "https://mail-gateway.example/nudge")
        if not (secret or "").strip():
            raise ProviderConfigError("Webhook signing secret is empty")
        if len(secret.strip()) < 16:
            raise ProviderConfigError(
                "Webhook signing secret is too short; use at least 16 random characters"
            )
        self._secret = secret.strip()
        self._wall_clock = wall_clock
        self.url = str(parsed)
        # A token in the URL's query or userinfo is a credential too.
        url_secrets = [v for _, v in parsed.params.multi_items() if len(v) >= 4]
        if parsed.password:
            url_secrets.append(parsed.password)
        super().__init__(
            self.url,
            limits=ProviderLimits(
                max_batch=batch_size,
                max_request_bytes=None,
                idempotent=idempotent,
                requests_per_second=None,
                per_message_results=True,
            ),
            batch_size=batch_size,
            headers={},
            secrets=[self._secret, *url_secrets],
            url_secrets=url_secrets,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            requests_per_second=requests_per_second,
            max_rate_limit_wait=max_rate_limit_wait,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            transport=transport,
            sleep=sleep,
            jitter=jitter,
            clock=clock,
        )

    def _repr_url(self) -> str:
        return public_url(self.url)

    def build_item(self, message: Message) -> Any:
        return build_webhook_message(message)

    def encode(self, items: list[Any]) -> bytes:
        return json.dumps({"messages": items}).encode("utf-8")

    def request_headers(self, body: bytes, key: str | None) -> dict[str, str]:
        timestamp = int(self._wall_clock())
        headers = {
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign_webhook_body(self._secret, body, timestamp),
        }
        if key is not None:
            # Sent even when the provider is not declared idempotent: a gateway may still use
            # it to spot duplicates.
            headers["Idempotency-Key"] = key
        return headers

    def parse_accepted(
        self, response: httpx.Response, entries: list[RequestEntry]
    ) -> list[Delivery]:
        data = json_or_none(response)
        rows = data.get("results") if isinstance(data, dict) else None
        reported: dict[str, Delivery] = {}
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or not isinstance(row.get("send_id"), str):
                continue
            status = row.get("status")
            message_id = row.get("message_id")
            mid = str(message_id) if message_id else None
            error = str(row["error"]) if row.get("error") else None
            if status == "sent":
                reported[row["send_id"]] = Delivery("sent", message_id=mid)
            elif status == "failed":
                reported[row["send_id"]] = Delivery(
                    "failed",
                    error=error or "the webhook reported it failed",
                    retryable=row.get("retryable") is True,
                )
            else:
                reported[row["send_id"]] = Delivery(
                    "unknown", error=f"the webhook answered status {status!r}"
                )
        return [reported.get(e.message.send_id, Delivery("sent")) for e in entries]
