"""Resend adapter: ``POST /emails/batch``, up to 100 messages per request, idempotent.

Every request carries an ``Idempotency-Key``: the batch key dispatch passes to ``send()`` (it
is recorded in the ledger), or ``f"{key}-{i}"`` when the batch takes several requests, and
``f"{request key}-0"``/``-1`` for the halves of a split request. That is still safe across a
crash: the cut is a pure function of the batch (messages ordered by send_id, fixed batch size,
split only on the provider's own deterministic answer), so resending the same batch produces
the same requests under the same keys, and Resend answers each with its first answer (keys
live 24 hours) instead of delivering again. A *different* payload under a used key (the batch
changed between runs) is answered 409 ``invalid_idempotent_request``: those messages become
``unknown``, never resent under a fresh key.

Resend validates a batch all-or-nothing by default ("strict" mode): a 400/422 for one bad row
rejects the whole request, so it is split in halves until the bad rows stand alone. Resend
also documents an ``x-batch-validation: permissive`` header with per-row errors, but the
published OpenAPI spec (``resend.yaml``) documents neither the header nor the ``errors`` array
of its answer, so this adapter sticks to what the spec describes.

``tags`` carry send_id, trigger and step (Resend echoes tags on its webhooks); tag names and
values may only hold ASCII letters, digits, ``_`` and ``-``, so anything else becomes ``_``.
The documented default rate limit is 2 requests per second per team, the adapter's default.

The message's extra headers (``Message.headers``, e.g. ``List-Unsubscribe``) ride in each
email's ``headers`` object, as they are; a message without any has no ``headers``.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from dagster_project.providers.base import Message, ProviderLimits, checked_headers
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

BATCH_PATH = "/emails/batch"
DEFAULT_BASE_URL = "https://api.resend.com"
MAX_BATCH = 100
DEFAULT_REQUESTS_PER_SECOND = 2.0
MAX_TAG_LENGTH = 256
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# 429s that no wait within a run will cure.
_QUOTA_ERRORS = frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})


def resend_tag(name: str, value: str) -> dict[str, str]:
    """A Resend tag, with characters Resend refuses replaced by ``_``."""
    return {
        "name": _TAG_UNSAFE.sub("_", name)[:MAX_TAG_LENGTH] or "_",
        "value": _TAG_UNSAFE.sub("_", value)[:MAX_TAG_LENGTH] or "_",
    }


def build_resend_email(message: Message) -> dict[str, Any]:
    """One element of the ``/emails/batch`` array; ``ValueError`` if it cannot be sent."""
    if not message.to_email or "@" not in message.to_email:
        raise ValueError("to_email is not an email address")
    if not message.from_email or "@" not in message.from_email:
        raise ValueError("from_email is not an email address")
    if not message.text and not message.html:
        raise ValueError("message has neither a text nor an HTML body")
    headers = dict(checked_headers(message.headers))
    tags = {"send_id": message.send_id, "trigger": message.trigger, "step": message.step}
    for key, value in message.custom_args.items():
        tags.setdefault(str(key), str(value))
    email: dict[str, Any] = {
        "from": message.from_email,
        "to": [message.to_email],
        "subject": message.subject,
        "tags": [resend_tag(k, v) for k, v in tags.items()],
    }
    if message.html:
        email["html"] = message.html
    if message.text:
        email["text"] = message.text
    if headers:
        email["headers"] = headers
    return email


class ResendProvider(HttpJsonProvider):
    """Send messages through Resend's batch email API."""

    name = "resend"
    display_name = "Resend"
    secret_label = "api_key"
    max_idempotency_key_length = 256  # the spec's maxLength for Idempotency-Key

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
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

        ``requests_per_second`` defaults to Resend's documented 2/s; raise it only if Resend
        raised your team's limit.
        """
        key = require_secret(api_key, "Resend API key")
        url = require_http_url(base_url, "Resend base URL", DEFAULT_BASE_URL)
        self.base_url = str(url).rstrip("/")
        rate = requests_per_second or DEFAULT_REQUESTS_PER_SECOND
        # A hand-over is what the workers can send within about a second: at Resend's default
        # 2 requests/s, more would only queue at the rate limiter while its consent re-check
        # grows old.
        round_of_requests = max(1, min(max_concurrency, math.ceil(rate)))
        super().__init__(
            self.base_url + BATCH_PATH,
            limits=ProviderLimits(
                # One call is at most one round of the workers' requests, MAX_BATCH each.
                max_batch=MAX_BATCH * max(1, max_concurrency),
                default_batch=MAX_BATCH * round_of_requests,
                max_request_bytes=None,
                idempotent=True,
                requests_per_second=DEFAULT_REQUESTS_PER_SECOND,
                per_message_results=False,
            ),
            batch_size=MAX_BATCH,
            headers={"Authorization": f"Bearer {key}"},
            secrets=[key],
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
        return build_resend_email(message)

    def parse_accepted(
        self, response: httpx.Response, entries: list[RequestEntry]
    ) -> list[Delivery]:
        # Strict mode: a 2xx means every email of the request was accepted; the ids come back
        # in request order.
        data = json_or_none(response)
        rows = data.get("data") if isinstance(data, dict) else None
        ids: list[str | None] = []
        if isinstance(rows, list) and len(rows) == len(entries):
            ids = [str(r["id"]) if isinstance(r, dict) and r.get("id") else None for r in rows]
        else:
            ids = [None] * len(entries)
        return [Delivery("sent", message_id=i) for i in ids]

    def error_text(self, response: httpx.Response) -> str:
        data = json_or_none(response)
        if isinstance(data, dict) and (data.get("message") or data.get("name")):
            name, text = data.get("name"), data.get("message")
            return f"{name}: {text}" if name and text else str(text or name)
        return body_excerpt(response)

    def classify(self, response: httpx.Response) -> Rejection:
        rejection = super().classify(response)
        data = json_or_none(response)
        name = data.get("name") if isinstance(data, dict) else None
        if response.status_code == 409 and name == "concurrent_idempotent_requests":
            # The first request with this key is still running: ask again later with the same
            # key, and Resend will answer with that request's outcome.
            return Rejection("transient", rejection.reason)
        if response.status_code == 429 and name in _QUOTA_ERRORS:
            return Rejection("rate_limited", rejection.reason, wait=rejection.wait, exhausted=True)
        return rejection
