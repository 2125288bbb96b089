"""SendGrid adapter: ``POST /v3/mail/send``, in one of two modes.

* **One message per request** (default). SendGrid answers a request with a single 202 or a
  single 400, so one request per message keeps one bad address from failing (or hiding) a whole
  batch, and the ``X-Message-Id`` belongs to exactly one ledger row.
* **Dynamic template** (``template_id="d-..."``): up to 1000 messages per request, one
  *personalization* each, the rendered subject/html/text passed as ``dynamic_template_data``
  (the template in SendGrid must be ``{{subject}}`` / ``{{{html}}}`` / ``{{text}}``). About a
  thousand times fewer requests, but all-or-nothing: a 400 rejects the whole request, so it is
  split in halves until the bad rows stand alone (see :mod:`.http`). SendGrid also rejects a
  request naming the same recipient twice, so a request never carries one address twice.

SendGrid has no idempotency key: a request whose answer is lost (read timeout, dropped
connection) leaves its messages ``unknown`` and is never resent. ``custom_args.send_id`` rides
on every personalization so the provider's events join back to the ledger, and so a duplicate
would be visible there. The message's extra headers (``Message.headers``, e.g.
``List-Unsubscribe``) go in the request's ``headers`` object in one-message mode and in each
personalization's ``headers`` in template mode (each recipient has their own unsubscribe link);
a message without any carries no ``headers`` at all. Retry and rate-limit behaviour is shared
with the other HTTP adapters (:class:`~dagster_project.providers.http.HttpJsonProvider`).
"""

from __future__ import annotations

import functools
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
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
    require_http_url,
    require_secret,
)
from dagster_project.providers.wire import (
    body_excerpt,
    json_or_none,
)

__all__ = ["SEND_PATH", "SendGridProvider", "build_sendgrid_payload"]

SEND_PATH = "/v3/mail/send"
DEFAULT_BASE_URL = "https://api.sendgrid.com"
# SendGrid's documented ceilings: 1000 personalizations per request, 30 MB per request.
MAX_PERSONALIZATIONS = 1000
MAX_REQUEST_BYTES = 30_000_000


# A bare address (no display name, quotes, comments or lists): parseaddr would return it as
# is, and it is nearly every recipient. parseaddr took 80 us per call, a fifth of a request.
_BARE_ADDRESS = re.compile(r"[^\s@<>()\[\]\\,;:\"]+@[^\s@<>()\[\]\\,;:\"]+")


@functools.lru_cache(maxsize=64)
def _parse_named(value: str) -> tuple[str, str]:
    return parseaddr(value)


def _split_address(value: str) -> tuple[str, str]:
    """``(display name, address)`` as :func:`email.utils.parseaddr` reads them."""
    if _BARE_ADDRESS.fullmatch(value):
        return "", value
    # Named addresses are senders, nearly always: the same few strings, cached.
    return _parse_named(value) if len(value) < 320 else parseaddr(value)


def _addresses(message: Message) -> tuple[dict[str, str], dict[str, str]]:
    """``(from, to)`` as SendGrid address objects; ``ValueError`` if either is unusable."""
    from_name, from_addr = _split_address(message.from_email)
    if not from_addr or "@" not in from_addr:
        raise ValueError("from_email is not an email address")
    to_name, to_addr = _split_address(message.to_email)
    if not to_addr or "@" not in to_addr:
        raise ValueError("to_email is not an email address")
    sender = {"email": from_addr}
    if from_name:
        sender["name"] = from_name
    recipient = {"email": to_addr}
    if to_name:
        recipient["name"] = to_name
    return sender, recipient


def _custom_args(message: Message) -> dict[str, str]:
    # Always the ledger keys, as strings: SendGrid's event webhook echoes them back.
    args = {str(k): str(v) for k, v in message.custom_args.items()}
    args.update(send_id=message.send_id, trigger=message.trigger, step=message.step)
    return args


def build_sendgrid_payload(message: Message) -> dict[str, Any]:
    """Build the JSON body of ``POST /v3/mail/send`` for one message.

    ``custom_args`` sit on the personalization (the spec types the top-level one as a string),
    and always carry send_id, trigger and step so SendGrid's event webhook rows join back to the
    ledger. ``text/plain`` comes before ``text/html``: SendGrid rejects any other order. The
    message's extra headers go in the top-level ``headers`` object, as they are.

    Raises ``ValueError`` when the message cannot be sent at all (no sender, no body, a header
    :func:`~dagster_project.providers.base.checked_headers` refuses).
    """
    sender, recipient = _addresses(message)
    headers = dict(checked_headers(message.headers))
    content = []
    if message.text:
        content.append({"type": "text/plain", "value": message.text})
    if message.html:
        content.append({"type": "text/html", "value": message.html})
    if not content:
        raise ValueError("message has neither a text nor an HTML body")
    payload: dict[str, Any] = {
        "personalizations": [{"to": [recipient], "custom_args": _custom_args(message)}],
        "from": sender,
        "subject": message.subject,
        "content": content,
    }
    if headers:
        payload["headers"] = headers
    return payload


@dataclass(frozen=True)
class _TemplateItem:
    """One message in template mode: its personalization, and what groups it into requests."""

    sender: dict[str, str]
    personalization: dict[str, Any]
    recipient: str  # lower-cased address: SendGrid refuses one address twice per request


def build_template_personalization(message: Message) -> _TemplateItem:
    """One personalization for template mode; ``ValueError`` if the message cannot be sent.

    The message's extra headers go in the personalization's own ``headers``: they differ per
    recipient (each has their own unsubscribe link) and ``from`` is all a request shares.
    """
    sender, recipient = _addresses(message)
    headers = dict(checked_headers(message.headers))
    if not message.text and not message.html:
        raise ValueError("message has neither a text nor an HTML body")
    if not message.subject:
        raise ValueError("message has an empty subject")
    personalization: dict[str, Any] = {
        "to": [recipient],
        "custom_args": _custom_args(message),
        "dynamic_template_data": {
            "subject": message.subject,
            "html": message.html,
            "text": message.text,
        },
    }
    if headers:
        personalization["headers"] = headers
    return _TemplateItem(sender, personalization, recipient["email"].lower())


def _sendgrid_error_text(response: httpx.Response) -> str:
    """SendGrid's own words for a failure: ``errors[].message`` joined, else a body excerpt."""
    data = json_or_none(response)
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        parts = []
        for err in data["errors"]:
            if not isinstance(err, dict) or not err.get("message"):
                continue
            text = str(err["message"])
            field = err.get("field")
            if field and field != "null":
                text += f" (field: {field})"
            parts.append(text)
        if parts:
            return "; ".join(parts)
    return body_excerpt(response)


class SendGridProvider(HttpJsonProvider):
    """Send messages through SendGrid's v3 Mail Send API."""

    name = "sendgrid"
    display_name = "SendGrid"
    secret_label = "api_key"

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        template_id: str | None = None,
        timeout: float = 10.0,
        max_concurrency: int = 8,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        requests_per_second: float | None = None,
        max_rate_limit_wait: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Create the provider; raises :class:`ProviderConfigError` before any send if unusable.

        ``template_id``: a SendGrid *dynamic* template id (``d-...``) switches to batched
        template mode (see the module docstring).
        """
        api_key = require_secret(api_key, "SendGrid API key")
        url = require_http_url(base_url, "SendGrid base URL", DEFAULT_BASE_URL)
        template_id = (template_id or "").strip() or None
        if template_id is not None and not template_id.startswith("d-"):
            raise ProviderConfigError(
                f"SendGrid template_id must be a dynamic template id starting with 'd-', "
                f"got {template_id!r}"
            )
        self.template_id = template_id
        self.base_url = str(url).rstrip("/")
        super().__init__(
            self.base_url + SEND_PATH,
            # max_batch is per send() call; in the default mode each message is one request,
            # in template mode one call is one round of the workers' full requests.
            limits=ProviderLimits(
                max_batch=MAX_PERSONALIZATIONS * (max_concurrency if template_id else 1),
                default_batch=MAX_PERSONALIZATIONS * max_concurrency if template_id else 100,
                max_request_bytes=MAX_REQUEST_BYTES,
                idempotent=False,
                requests_per_second=None,
                per_message_results=template_id is None,
            ),
            batch_size=MAX_PERSONALIZATIONS if template_id else 1,
            headers={"Authorization": f"Bearer {api_key}"},
            secrets=[api_key],
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

    def __repr__(self) -> str:
        return (
            f"SendGridProvider(base_url={self.base_url!r}, api_key=<hidden>, "
            f"template_id={self.template_id!r}, timeout={self.timeout}, "
            f"max_concurrency={self.max_concurrency}, max_attempts={self.max_attempts})"
        )

    def build_item(self, message: Message) -> Any:
        if self.template_id is None:
            return build_sendgrid_payload(message)
        return build_template_personalization(message)

    def encode(self, items: list[Any]) -> bytes:
        if self.template_id is None:
            (payload,) = items
            return json.dumps(payload).encode("utf-8")
        payload = {
            "from": items[0].sender,
            "template_id": self.template_id,
            "personalizations": [item.personalization for item in items],
        }
        return json.dumps(payload).encode("utf-8")

    def chunks(self, entries: list[RequestEntry]) -> list[list[RequestEntry]]:
        """Template mode: one sender per request (``from`` is request-wide), no address twice."""
        if self.template_id is None:
            return [[e] for e in entries]
        by_sender: dict[str, list[tuple[list[RequestEntry], set[str]]]] = {}
        for entry in entries:
            item: _TemplateItem = entry.item
            groups = by_sender.setdefault(json.dumps(item.sender, sort_keys=True), [])
            for group, recipients in groups:
                if len(group) < self.batch_size and item.recipient not in recipients:
                    group.append(entry)
                    recipients.add(item.recipient)
                    break
            else:
                groups.append(([entry], {item.recipient}))
        return [group for groups in by_sender.values() for group, _ in groups]

    def parse_accepted(
        self, response: httpx.Response, entries: list[RequestEntry]
    ) -> list[Delivery]:
        # One X-Message-Id per request; SendGrid's events carry it as a prefix of
        # sg_message_id, and custom_args.send_id tells the recipients apart.
        message_id = response.headers.get("X-Message-Id") or None
        return [Delivery("sent", message_id=message_id) for _ in entries]

    def error_text(self, response: httpx.Response) -> str:
        return _sendgrid_error_text(response)
