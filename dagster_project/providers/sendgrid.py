"""SendGrid adapter: one ``POST /v3/mail/send`` per message, bounded concurrency, safe retries.

Design notes (the why):

* One request per message, not one request with 1000 personalizations: SendGrid answers a
  multi-personalization request with a single 202 or a single 400, so one bad address would fail
  (or hide) the whole batch, and events could not be tied back to one ledger row by message id.
* One shared sync :class:`httpx.Client` driven by a ``ThreadPoolExecutor``: keep-alive
  connections are reused across messages, the pool is capped at ``max_concurrency`` so we never
  open more connections than we have workers, and for this request/response pattern it measured
  faster than ``AsyncClient``.
* Retries: 429 honours ``Retry-After``; 5xx, timeouts and connection errors back off
  exponentially with jitter (so parallel workers do not retry in lockstep); any other 4xx is the
  message's own fault and is not retried. SendGrid has no idempotency key, so a retry after a
  *read* timeout can in rare cases deliver twice; ``custom_args.send_id`` rides on every message
  so such duplicates are visible in the provider's events.
* The API key lives only in the client's default headers. It is never formatted into an error,
  a log line or ``repr``, and every provider-supplied text is scrubbed of it before use.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any

import httpx

from dagster_project.masking import mask_email, mask_emails_in_text
from dagster_project.providers.base import (
    Message,
    ProviderConfigError,
    ProviderError,
    ProviderLimits,
    SendResult,
)

logger = logging.getLogger(__name__)

SEND_PATH = "/v3/mail/send"
_REDACTED = "[REDACTED]"
_MAX_BODY_IN_ERROR = 300
# The request never left the client (no connection, or no free connection in the pool): safe
# to retry, nothing can have been delivered.
_RETRYABLE_TRANSPORT_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# The request was (or may have been) sent but no answer came back: SendGrid may have accepted
# it, and it has no idempotency key, so a retry could deliver the email twice. These end as
# ``unknown`` rather than being retried: never send twice.
_UNCERTAIN_TRANSPORT_ERRORS = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle (~20 ms)."""
    return httpx.create_ssl_context()


def build_sendgrid_payload(message: Message) -> dict[str, Any]:
    """Build the JSON body of ``POST /v3/mail/send`` for one message.

    ``custom_args`` sit on the personalization (the spec types the top-level one as a string),
    and always carry send_id, trigger and step so SendGrid's event webhook rows join back to the
    ledger. ``text/plain`` comes before ``text/html``: SendGrid rejects any other order.

    Raises ``ValueError`` when the message cannot be sent at all (no sender, no body).
    """
    from_name, from_addr = parseaddr(message.from_email)
    if not from_addr or "@" not in from_addr:
        raise ValueError("from_email is not an email address")
    to_name, to_addr = parseaddr(message.to_email)
    if not to_addr or "@" not in to_addr:
        raise ValueError("to_email is not an email address")

    sender: dict[str, str] = {"email": from_addr}
    if from_name:
        sender["name"] = from_name
    recipient: dict[str, str] = {"email": to_addr}
    if to_name:
        recipient["name"] = to_name

    custom_args = {str(k): str(v) for k, v in message.custom_args.items()}
    custom_args.update(send_id=message.send_id, trigger=message.trigger, step=message.step)

    content = []
    if message.text:
        content.append({"type": "text/plain", "value": message.text})
    if message.html:
        content.append({"type": "text/html", "value": message.html})
    if not content:
        raise ValueError("message has neither a text nor an HTML body")

    return {
        "personalizations": [{"to": [recipient], "custom_args": custom_args}],
        "from": sender,
        "subject": message.subject,
        "content": content,
    }


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header (delay-seconds or HTTP-date) into seconds to wait.

    Returns ``None`` when absent or unparseable (the caller then falls back to backoff), and
    never a negative number (a date in the past means "now").
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _provider_error_text(response: httpx.Response) -> str:
    """SendGrid's own words for a failure: ``errors[].message`` joined, else a body excerpt."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        data = None
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
    body = response.text.strip()
    if len(body) > _MAX_BODY_IN_ERROR:
        body = body[:_MAX_BODY_IN_ERROR] + "..."
    return body or response.reason_phrase or "no response body"


@dataclass(frozen=True)
class _Attempt:
    """The outcome of one HTTP attempt."""

    sent: bool
    retryable: bool = False
    uncertain: bool = False
    reason: str = ""
    message_id: str | None = None
    retry_after: float | None = None


class SendGridProvider:
    """Send messages through SendGrid's v3 Mail Send API."""

    name = "sendgrid"
    # No idempotency key: a lost answer is 'unknown', never resent.
    limits = ProviderLimits(max_batch=1000, idempotent=False)

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        timeout: float,
        max_concurrency: int,
        max_attempts: int,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """Create the provider; raises :class:`ProviderConfigError` before any send if unusable.

        ``sleep`` and ``jitter`` are injectable so tests can record waits instead of sleeping
        and make backoff deterministic. ``transport`` lets tests use ``httpx.MockTransport``.
        """
        api_key = (api_key or "").strip()
        if not api_key:
            raise ProviderConfigError("SendGrid API key is empty")
        # A key with spaces or control characters would make httpx raise an error that quotes
        # the header value, i.e. the key. Refuse it here, without echoing it.
        if not (api_key.isascii() and api_key.isprintable()) or " " in api_key:
            raise ProviderConfigError(
                "SendGrid API key contains whitespace or non-printable characters"
            )
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ProviderConfigError(
                f"SendGrid base URL must be an http(s) URL such as https://api.sendgrid.com, "
                f"got {base_url!r}"
            )
        if timeout <= 0:
            raise ProviderConfigError(f"timeout must be positive, got {timeout}")
        if max_concurrency < 1:
            raise ProviderConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_attempts < 1:
            raise ProviderConfigError(f"max_attempts must be >= 1, got {max_attempts}")

        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._url = self.base_url + SEND_PATH
        self._api_key = api_key
        self._sleep = sleep
        self._jitter = jitter
        self._client = httpx.Client(
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "nudge",
            },
            timeout=httpx.Timeout(self.timeout),
            # As many pooled connections as workers: no worker waits on the pool, none idle.
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            transport=transport,
            verify=_ssl_context(),
            follow_redirects=False,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix="nudge-sendgrid"
        )
        self._closed = False
        self._close_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"SendGridProvider(base_url={self.base_url!r}, api_key=<hidden>, "
            f"timeout={self.timeout}, max_concurrency={self.max_concurrency}, "
            f"max_attempts={self.max_attempts})"
        )

    def __enter__(self) -> SendGridProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(
        self, messages: Sequence[Message], *, idempotency_key: str | None = None
    ) -> list[SendResult]:
        """Send every message, at most ``max_concurrency`` at a time; results in input order."""
        if self._closed:
            raise ProviderError("SendGridProvider is closed")
        if not messages:
            return []
        futures = [self._executor.submit(self._send_one, m) for m in messages]
        results = [f.result() for f in futures]
        failed = sum(r.status == "failed" for r in results)
        logger.info(
            "sendgrid: %d sent, %d failed, %d requests",
            len(results) - failed,
            failed,
            sum(r.attempts for r in results),
        )
        return results

    def close(self) -> None:
        """Cancel queued sends, wait for in-flight ones, close the pool. Safe to call twice.

        After a normal ``send()`` nothing is queued. If the run is being stopped mid-batch
        (SIGTERM, an exception), queued requests are cancelled rather than sent after the run
        has given up recording them: those rows stay 'sending' and the next tick settles them.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # -- internals -------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, _REDACTED)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, capped."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return ceiling / 2 + (ceiling / 2) * self._jitter()

    def _send_one(self, message: Message) -> SendResult:
        """Never raises: whatever happens becomes this message's result.

        An exception escaping here would surface from ``send()`` and lose the results of
        messages that were already accepted, and the caller would send them again.
        """
        try:
            return self._send_with_retries(message)
        except Exception as exc:
            reason = self._redact(f"unexpected error: {type(exc).__name__}: {exc}")
            logger.error(
                "sendgrid: send %s to %s failed: %s",
                message.send_id,
                mask_email(message.to_email),
                mask_emails_in_text(reason),
            )
            return SendResult(send_id=message.send_id, status="failed", error=reason)

    def _send_with_retries(self, message: Message) -> SendResult:
        masked_to = mask_email(message.to_email)
        try:
            payload = build_sendgrid_payload(message)
        except ValueError as exc:
            logger.warning("sendgrid: send %s to %s not sent: %s", message.send_id, masked_to, exc)
            return SendResult(send_id=message.send_id, status="failed", error=str(exc), attempts=0)
        body = json.dumps(payload).encode("utf-8")  # serialised once, reused by every retry

        outcome = _Attempt(sent=False)
        for attempt in range(1, self.max_attempts + 1):
            outcome = self._attempt(body)
            if outcome.sent:
                logger.debug(
                    "sendgrid: send %s to %s accepted (attempt %d)",
                    message.send_id,
                    masked_to,
                    attempt,
                )
                return SendResult(
                    send_id=message.send_id,
                    status="sent",
                    provider_message_id=outcome.message_id,
                    attempts=attempt,
                )
            if outcome.uncertain:
                logger.warning(
                    "sendgrid: send %s to %s may have been accepted (%s); not retried",
                    message.send_id,
                    masked_to,
                    mask_emails_in_text(outcome.reason),
                )
                return SendResult(
                    send_id=message.send_id,
                    status="unknown",
                    error=mask_emails_in_text(
                        f"{outcome.reason}; SendGrid may have accepted it, not retried"
                    ),
                    attempts=attempt,
                )
            if not outcome.retryable:
                logger.warning(
                    "sendgrid: send %s to %s rejected, not retrying: %s",
                    message.send_id,
                    masked_to,
                    mask_emails_in_text(outcome.reason),
                )
                return SendResult(
                    send_id=message.send_id,
                    status="failed",
                    error=mask_emails_in_text(outcome.reason),
                    attempts=attempt,
                )
            if attempt == self.max_attempts:
                break
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, self.backoff_max)
            else:
                delay = self._backoff(attempt)
            logger.warning(
                "sendgrid: send %s to %s attempt %d/%d failed (%s); retrying in %.2fs",
                message.send_id,
                masked_to,
                attempt,
                self.max_attempts,
                mask_emails_in_text(outcome.reason),
                delay,
            )
            self._sleep(delay)

        logger.warning(
            "sendgrid: send %s to %s failed after %d attempts: %s",
            message.send_id,
            masked_to,
            self.max_attempts,
            mask_emails_in_text(outcome.reason),
        )
        return SendResult(
            send_id=message.send_id,
            status="failed",
            error=mask_emails_in_text(outcome.reason),
            attempts=self.max_attempts,
            retryable=True,
        )

    def _attempt(self, body: bytes) -> _Attempt:
        """One POST; classify the outcome as sent, retryable or final."""
        try:
            response = self._client.post(self._url, content=body)
        except _RETRYABLE_TRANSPORT_ERRORS as exc:
            return _Attempt(sent=False, retryable=True, reason=self._transport_reason(exc))
        except _UNCERTAIN_TRANSPORT_ERRORS as exc:
            return _Attempt(sent=False, uncertain=True, reason=self._transport_reason(exc))
        except httpx.HTTPError as exc:
            return _Attempt(sent=False, retryable=False, reason=self._transport_reason(exc))

        status = response.status_code
        if 200 <= status < 300:
            return _Attempt(sent=True, message_id=response.headers.get("X-Message-Id") or None)
        reason = self._redact(f"HTTP {status}: {_provider_error_text(response)}")
        if status in (408, 429) or status >= 500:
            return _Attempt(
                sent=False,
                retryable=True,
                reason=reason,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return _Attempt(sent=False, retryable=False, reason=reason)

    def _transport_reason(self, exc: httpx.HTTPError) -> str:
        detail = str(exc) or "no detail"
        if isinstance(exc, httpx.TimeoutException):
            detail = f"{detail} (timeout {self.timeout:g}s)"
        return self._redact(f"{type(exc).__name__}: {detail}")
