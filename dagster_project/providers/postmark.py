"""Postmark adapter: ``POST /email/batch``, up to 500 messages per request.

Postmark's batch answers HTTP 200 with one result per message, in request order:
``{"ErrorCode": 0, "MessageID": ...}`` when accepted, else a non-zero ``ErrorCode`` and
Postmark's ``Message``. So a bad address fails alone and the batch is never split to find it.
Whole-request errors (bad token: 401; malformed request: 422 with ``ErrorCode``) fail every
message of the request, except the codes below that say "try later".

Postmark has no idempotency key: a request whose answer is lost leaves its messages
``unknown``, never resent. ``Metadata.send_id`` rides on every message (Postmark echoes
``Metadata`` on its bounce/delivery/open webhooks), ``Tag`` is the trigger (Postmark's
statistics group by tag) and ``MessageStream`` picks the transactional or broadcast stream. The
message's extra headers (``Message.headers``, e.g. ``List-Unsubscribe``) ride as ``Headers``,
``[{"Name", "Value"}]`` in the given order; a message without any has no ``Headers``.

Documented limits: 500 messages and 50 MB per batch request, 10 MB per message (a request over
its limit gets HTTP 413, which splits it), at most 10 ``Metadata`` fields per message.
"""

from __future__ import annotations

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
    Rejection,
    RequestEntry,
)
from dagster_project.providers.redaction import (
    require_http_url,
    require_secret,
)
from dagster_project.providers.wire import (
    body_excerpt,
    json_or_none,
)

BATCH_PATH = "/email/batch"
DEFAULT_BASE_URL = "https://api.postmarkapp.com"
MAX_BATCH = 500
MAX_REQUEST_BYTES = 50_000_000
MAX_METADATA_FIELDS = 10

# Postmark API error codes that describe the account or the service, not the message: nothing
# was sent and the same message can go through later, so they are retryable.
#   100 maintenance; 405 not allowed to send (out of credits); 412 account pending approval
#   (recipients outside the sender's domain refused); 429 rate limit exceeded.
# Every other non-zero code (300 invalid email request, 406 inactive recipient, 400/401 sender
# signature missing or unconfirmed, ...) is permanent for that message.
TRANSIENT_ERROR_CODES = frozenset({100, 405, 412, 429})


def build_postmark_message(message: Message, *, message_stream: str) -> dict[str, Any]:
    """One element of the ``/email/batch`` array; ``ValueError`` if it cannot be sent."""
    if not message.to_email or "@" not in message.to_email:
        raise ValueError("to_email is not an email address")
    if not message.from_email or "@" not in message.from_email:
        raise ValueError("from_email is not an email address")
    if not message.text and not message.html:
        # Postmark would answer ErrorCode 300 for it; no need to spend a request.
        raise ValueError("message has neither a text nor an HTML body")
    headers = checked_headers(message.headers)
    metadata = {"send_id": message.send_id, "trigger": message.trigger, "step": message.step}
    for key, value in message.custom_args.items():
        if len(metadata) >= MAX_METADATA_FIELDS:
            break
        metadata.setdefault(str(key), str(value))
    item: dict[str, Any] = {
        "From": message.from_email,
        "To": message.to_email,
        "Subject": message.subject,
        "Tag": message.trigger,
        "Metadata": metadata,
        "MessageStream": message_stream,
    }
    if message.html:
        item["HtmlBody"] = message.html
    if message.text:
        item["TextBody"] = message.text
    if headers:
        item["Headers"] = [{"Name": name, "Value": value} for name, value in headers]
    return item


def _error_code(data: Any) -> int | None:
    if isinstance(data, dict):
        code = data.get("ErrorCode")
        if isinstance(code, int):
            return code
    return None


def _describe(data: Any) -> str | None:
    """``"Postmark error 406: You tried to send to a recipient that has been marked as
    inactive..."`` from a ``{ErrorCode, Message}`` object."""
    if not isinstance(data, dict):
        return None
    code = data.get("ErrorCode")
    text = data.get("Message")
    if code is None and not text:
        return None
    return f"Postmark error {code}: {text or 'no message'}"


class PostmarkProvider(HttpJsonProvider):
    """Send messages through Postmark's batch email API."""

    name = "postmark"
    display_name = "Postmark"
    secret_label = "server_token"

    def __init__(
        self,
        server_token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        message_stream: str = "outbound",
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
    ) -> None:
        """Create the provider; raises :class:`ProviderConfigError` before any send if unusable.

        ``message_stream``: the Postmark message stream id ("outbound" is every server's
        default transactional stream; marketing sends belong on a broadcast stream).
        """
        token = require_secret(server_token, "Postmark server token")
        url = require_http_url(base_url, "Postmark base URL", DEFAULT_BASE_URL)
        stream = (message_stream or "").strip()
        if not stream:
            raise ProviderConfigError("Postmark message_stream is empty; the default is 'outbound'")
        self.message_stream = stream
        self.base_url = str(url).rstrip("/")
        super().__init__(
            self.base_url + BATCH_PATH,
            limits=ProviderLimits(
                # One call is one round of the workers' requests: MAX_BATCH messages each.
                max_batch=MAX_BATCH * max_concurrency,
                default_batch=MAX_BATCH * max_concurrency,
                max_request_bytes=MAX_REQUEST_BYTES,
                idempotent=False,
                requests_per_second=None,
                per_message_results=True,
            ),
            batch_size=MAX_BATCH,
            headers={"X-Postmark-Server-Token": token},
            secrets=[token],
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

    def build_item(self, message: Message) -> Any:
        return build_postmark_message(message, message_stream=self.message_stream)

    def parse_accepted(
        self, response: httpx.Response, entries: list[RequestEntry]
    ) -> list[Delivery]:
        data = json_or_none(response)
        if not isinstance(data, list):
            # An answer we cannot read: the messages may well have been accepted.
            return []
        deliveries = []
        for result in data:
            code = _error_code(result)
            if code == 0:
                message_id = result.get("MessageID")
                deliveries.append(Delivery("sent", message_id=str(message_id or "") or None))
            elif code is None:
                deliveries.append(Delivery("unknown", error="Postmark result without ErrorCode"))
            else:
                deliveries.append(
                    Delivery(
                        "failed",
                        error=_describe(result),
                        retryable=code in TRANSIENT_ERROR_CODES,
                    )
                )
        return deliveries

    def error_text(self, response: httpx.Response) -> str:
        return _describe(json_or_none(response)) or body_excerpt(response)

    def classify(self, response: httpx.Response) -> Rejection:
        rejection = super().classify(response)
        code = _error_code(json_or_none(response))
        if rejection.fate in ("invalid", "permanent") and code in TRANSIENT_ERROR_CODES:
            return Rejection("transient", rejection.reason)
        return rejection
