"""Shared machinery for the JSON-over-HTTP providers (SendGrid, Postmark, Resend, webhook).

An adapter says *what* goes over the wire: one JSON item per message (:meth:`build_item`), the
body of one request (:meth:`encode`), what a 2xx answer says about each message
(:meth:`parse_accepted`) and the provider's words for an error. :class:`HttpJsonProvider` decides
*how*: requests of at most ``batch_size`` messages and ``max_request_bytes`` bytes, run by a
``ThreadPoolExecutor`` over one pooled keep-alive :class:`httpx.Client` (for this
request/response pattern a sync client on threads measured faster than ``AsyncClient``; see
GUIDE.md), paced by a shared :class:`RateLimiter`, each request with its own retry loop:

========================== ============================================== ==============
answer                     what happens                                   an attempt?
========================== ============================================== ==============
2xx                        per-message results, as the adapter reads them yes
429 (or quota headers)     every worker pauses for ``Retry-After`` /       no
                           ``RateLimit-Reset``; past ``max_rate_limit_wait``
                           in total the request's messages fail retryable
5xx, 408, connect error    backoff with jitter, then failed retryable     yes
read timeout, dropped      idempotent provider: resent with the *same*    yes
connection                 key; otherwise ``unknown`` and never resent
400 / 422                  all-or-nothing batch: split in halves until    yes
                           the bad rows stand alone; one message: failed
413                        split; one message: failed permanent           yes
other 4xx                  failed permanent                               yes
========================== ============================================== ==============

Why waits for a 429 are not attempts: the provider did not look at the messages, it asked us to
come back later, so "failed after 5 attempts" would be a lie about the messages. Waiting is
bounded instead, by time (``max_rate_limit_wait``) and by count, so a provider that keeps saying
"later" cannot hang the run.

Why ``unknown`` is sticky: once a request may have been delivered (its answer was lost), a
later failure of the same messages is reported as ``unknown``, not ``failed``: a retryable
failure would be resent by the next tick and could deliver twice. The one exception is a
400/422/413 to a same-key retry: the provider judged that very payload under that key (it
would have replayed its first answer had it accepted it), so its "no" is authoritative.

Secrets (API keys, tokens, HMAC secrets) live in the client's default headers or the adapter
only; every text that can reach an error, a log line or ``repr`` goes through :meth:`_redact`,
and recipients are masked in logs (:func:`mask_email`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal, Self

import httpx

from dagster_project.masking import mask_email, mask_emails_in_text
from dagster_project.providers.base import (
    Message,
    ProviderConfigError,
    ProviderError,
    ProviderLimits,
    SendResult,
    SendStatus,
)
from dagster_project.providers.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
MAX_ERROR_BODY = 300
# A provider answering 429 with "retry in 0 s" forever must not spin a worker forever.
MAX_RATE_LIMITED_ANSWERS = 20
# Some providers send the reset as a Unix timestamp (seconds or ms), others as seconds to wait.
_EPOCH_THRESHOLD = 1_000_000_000

# The request never left the client (no connection, or no free connection in the pool): safe
# to retry, nothing can have been delivered.
RETRYABLE_TRANSPORT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# The request was (or may have been) sent but no answer came back: the provider may have
# accepted it. Resent only with the same idempotency key; otherwise the messages are 'unknown'.
UNCERTAIN_TRANSPORT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)

# Raised before a byte of the request was sent (bad URL scheme, a header httpx refuses):
# retrying cannot help and nothing was delivered. Any other httpx error (say a DecodingError
# while reading an answer) may come after the provider took the request: uncertain.
UNSENT_TRANSPORT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)

# How a non-2xx answer (or a transport error) is handled; see the table in the module docstring.
# "conflict": the provider says the idempotency key was used for another payload, so what
# happened to these messages cannot be told from here ('unknown').
Fate = Literal[
    "rate_limited", "transient", "uncertain", "conflict", "invalid", "too_large", "permanent"
]


@dataclass(frozen=True)
class Rejection:
    """An adapter's reading of one non-2xx answer."""

    fate: Fate
    reason: str
    # Seconds the provider asked us to wait (Retry-After or its rate-limit headers), if any.
    wait: float | None = None
    # For "rate_limited": waiting will not help within this run (a daily quota), fail now.
    exhausted: bool = False


@dataclass(frozen=True)
class Delivery:
    """What a 2xx answer says about one message of the request."""

    status: SendStatus
    message_id: str | None = None
    error: str | None = None
    retryable: bool = False


@dataclass(frozen=True)
class Entry:
    """One message on its way: its position in the caller's list and its JSON item."""

    index: int
    message: Message
    item: Any


@dataclass(frozen=True)
class _Request:
    entries: list[Entry]
    body: bytes
    key: str | None
    prior_attempts: int = 0  # requests that carried these messages before a split

    @property
    def label(self) -> str:
        first = self.entries[0].message.send_id
        if len(self.entries) == 1:
            return f"send {first}"
        return f"request of {len(self.entries)} messages ({first}, ...)"


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle (~20 ms)."""
    return httpx.create_ssl_context()


# -- header parsing --------------------------------------------------------------------------


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


def parse_rate_limit_reset(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds until a ``RateLimit-Reset`` / ``X-RateLimit-Reset`` says the window reopens.

    Resend (the IETF draft) sends seconds to wait; SendGrid and others send a Unix timestamp,
    sometimes in milliseconds. A value too large to be a wait is read as a timestamp.
    """
    if value is None or not value.strip():
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if number >= _EPOCH_THRESHOLD * 1000:
        number /= 1000.0
    if number >= _EPOCH_THRESHOLD:
        number -= time.time() if now is None else now
    return max(0.0, number)


def rate_limit_wait(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """How long the provider asked us to wait: ``Retry-After``, else its rate-limit reset."""
    wait = parse_retry_after(headers.get("Retry-After"), now=now)
    if wait is not None:
        return wait
    for name in ("RateLimit-Reset", "X-RateLimit-Reset"):
        wait = parse_rate_limit_reset(headers.get(name), now=now)
        if wait is not None:
            return wait
    return None


def window_spent(headers: httpx.Headers) -> bool:
    """The answer says no request is left in the current window (``*-Remaining: 0``)."""
    for name in ("RateLimit-Remaining", "X-RateLimit-Remaining"):
        value = headers.get(name)
        if value is not None and value.strip() in ("0", "0.0"):
            return True
    return False


def body_excerpt(response: httpx.Response) -> str:
    """The start of a response body, for errors that are not the provider's usual JSON."""
    body = response.text.strip()
    if len(body) > MAX_ERROR_BODY:
        body = body[:MAX_ERROR_BODY] + "..."
    return body or response.reason_phrase or "no response body"


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


# -- retry helpers, shared with the per-message adapters (fanout.py) --------------------------


def backoff_delay(
    attempt: int, base: float, cap: float, jitter: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped at ``cap``.

    ``attempt`` counts from 1; ``jitter`` returns a number in [0, 1).
    """
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return ceiling / 2 + (ceiling / 2) * jitter()


def pooled_client(
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_concurrency: int,
    transport: httpx.BaseTransport | None,
) -> httpx.Client:
    """One keep-alive :class:`httpx.Client`, sending ``headers``, for a provider's workers.

    As many pooled connections as workers: no worker waits on the pool, none idles. Redirects
    are not followed.
    """
    return httpx.Client(
        headers=headers,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_concurrency, max_keepalive_connections=max_concurrency
        ),
        transport=transport,
        verify=_ssl_context(),
        follow_redirects=False,
    )


def describe_transport_error(exc: httpx.HTTPError, timeout: float) -> str:
    """``"ReadTimeout: ... (timeout 10s)"``: an httpx error for a result; redact it before use."""
    detail = str(exc) or "no detail"
    if isinstance(exc, httpx.TimeoutException):
        detail = f"{detail} (timeout {timeout:g}s)"
    return f"{type(exc).__name__}: {detail}"


# -- configuration checks shared by the adapters ----------------------------------------------


def require_secret(value: str | None, what: str) -> str:
    """Return the stripped secret, or raise without ever echoing it."""
    secret = (value or "").strip()
    if not secret:
        raise ProviderConfigError(f"{what} is empty")
    # A secret with spaces or control characters would make httpx raise an error quoting the
    # header value, i.e. the secret. Refuse it here, without echoing it.
    if not (secret.isascii() and secret.isprintable()) or " " in secret:
        raise ProviderConfigError(f"{what} contains whitespace or non-printable characters")
    return secret


def require_http_url(value: str | None, what: str, example: str) -> httpx.URL:
    """Parse an http(s) URL or raise a config error naming the setting and an example."""
    try:
        url = httpx.URL((value or "").strip())
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        shown = public_url(value or "")
        raise ProviderConfigError(f"{what} must be an http(s) URL such as {example}, got {shown!r}")
    return url


def public_url(value: str) -> str:
    """A URL without userinfo or query, which may hold credentials."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return "<invalid URL>"
    if not url.host:
        return value.split("?", 1)[0].rsplit("@", 1)[-1]
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


def check_worker_settings(timeout: float, max_concurrency: int, max_attempts: int) -> None:
    """The settings every provider with a worker pool and a retry loop needs to be sane."""
    if timeout <= 0:
        raise ProviderConfigError(f"timeout must be positive, got {timeout}")
    if max_concurrency < 1:
        raise ProviderConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if max_attempts < 1:
        raise ProviderConfigError(f"max_attempts must be >= 1, got {max_attempts}")


def _check_tuning(
    timeout: float,
    max_concurrency: int,
    max_attempts: int,
    requests_per_second: float | None,
    max_rate_limit_wait: float,
) -> None:
    check_worker_settings(timeout, max_concurrency, max_attempts)
    if requests_per_second is not None and requests_per_second <= 0:
        raise ProviderConfigError(
            f"requests_per_second must be positive (or unset), got {requests_per_second}"
        )
    if max_rate_limit_wait < 0:
        raise ProviderConfigError(f"max_rate_limit_wait must be >= 0, got {max_rate_limit_wait}")


class _HttpxLogRedactor(logging.Filter):
    """Scrub URL-embedded credentials from httpx's own log lines.

    httpx logs every request's full URL at INFO ("HTTP Request: POST https://..."); a webhook
    URL may carry a token in its query. Adapters register such secrets for their lifetime.
    """

    def __init__(self) -> None:
        super().__init__("httpx")
        self._lock = threading.Lock()
        self._secrets: dict[str, int] = {}

    def register(self, secrets: Sequence[str]) -> None:
        with self._lock:
            for secret in secrets:
                self._secrets[secret] = self._secrets.get(secret, 0) + 1

    def unregister(self, secrets: Sequence[str]) -> None:
        with self._lock:
            for secret in secrets:
                left = self._secrets.get(secret, 0) - 1
                if left > 0:
                    self._secrets[secret] = left
                else:
                    self._secrets.pop(secret, None)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = list(self._secrets)
        if secrets:
            text = record.getMessage()
            if any(secret in text for secret in secrets):
                for secret in secrets:
                    text = text.replace(secret, REDACTED)
                record.msg, record.args = text, ()
        return True


_HTTPX_LOG_REDACTOR = _HttpxLogRedactor()
logging.getLogger("httpx").addFilter(_HTTPX_LOG_REDACTOR)


class _SleepClock:
    """A monotonic clock that also moves forward by whatever an injected ``sleep`` skipped.

    Tests inject a ``sleep`` that records instead of sleeping; the rate limiter computes its
    waits from a clock, and with the real clock it would spin until real time caught up. This
    clock adds the part of each wait that real time did not cover: all of it for a recorder,
    nothing for a ``sleep`` that really sleeps (a cancellable ``Event.wait``, say), so the
    rate limit stays honest either way.
    """

    def __init__(self, sleep: Callable[[float], None]) -> None:
        self._inner = sleep
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def sleep(self, seconds: float) -> None:
        started = time.monotonic()
        self._inner(seconds)
        skipped = seconds - (time.monotonic() - started)
        if skipped > 0:
            with self._lock:
                self._offset += skipped


class HttpJsonProvider:
    """Base class of the HTTP adapters; subclasses fill in the hooks at the bottom."""

    name: str = "http"
    display_name: ClassVar[str] = "the provider"  # for error texts: "Postmark may have..."
    secret_label: ClassVar[str] = "api_key"  # for repr: "api_key=<hidden>"
    # Providers document a maximum length for idempotency keys (Resend: 256).
    max_idempotency_key_length: ClassVar[int] = 256
    limits: ProviderLimits

    def __init__(
        self,
        url: str,
        *,
        limits: ProviderLimits,
        batch_size: int,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        url_secrets: Sequence[str] = (),
        timeout: float,
        max_concurrency: int,
        max_attempts: int,
        requests_per_second: float | None = None,
        max_rate_limit_wait: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``url``: the endpoint every request is POSTed to. ``headers``: sent on every request
        (authentication included). ``secrets``: strings scrubbed from every error and log line.
        ``url_secrets``: credentials inside ``url`` itself, also scrubbed from httpx's logs.

        ``sleep``, ``jitter`` and ``clock`` are injectable so tests record waits instead of
        sleeping; when ``sleep`` is injected without a ``clock``, the clock advances by the
        injected sleeps (see :class:`_SleepClock`). ``transport`` accepts an
        ``httpx.MockTransport``.
        """
        _check_tuning(
            timeout, max_concurrency, max_attempts, requests_per_second, max_rate_limit_wait
        )
        if batch_size < 1:
            raise ProviderConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.limits = limits
        self.batch_size = batch_size
        self.timeout = float(timeout)
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.max_rate_limit_wait = float(max_rate_limit_wait)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._url = url
        self._secrets = tuple(s for s in secrets if s)
        self._jitter = jitter
        if clock is None and sleep is not time.sleep:
            sleep_clock = _SleepClock(sleep)
            self._clock: Callable[[], float] = sleep_clock
            self._sleep: Callable[[float], None] = sleep_clock.sleep
        else:
            self._clock = clock or time.monotonic
            self._sleep = sleep
        rate = (
            requests_per_second if requests_per_second is not None else limits.requests_per_second
        )
        self.requests_per_second = rate
        self._limiter = RateLimiter(rate, clock=self._clock, sleep=self._sleep)
        self._blocked_until = 0.0  # a clock() value; see _block_for()
        self._state_lock = threading.Lock()
        self.requests_made = 0
        self._client = pooled_client(
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "nudge",
                **headers,
            },
            timeout=self.timeout,
            max_concurrency=max_concurrency,
            transport=transport,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix=f"nudge-{self.name}"
        )
        self._url_secrets = tuple(s for s in url_secrets if s)
        _HTTPX_LOG_REDACTOR.register(self._url_secrets)
        self._closed = False
        self._close_lock = threading.Lock()

    def _repr_url(self) -> str:
        return public_url(self._url)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={self._repr_url()!r}, {self.secret_label}=<hidden>, "
            f"timeout={self.timeout}, max_concurrency={self.max_concurrency}, "
            f"max_attempts={self.max_attempts}, requests_per_second={self.requests_per_second})"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the Provider interface ------------------------------------------------------------

    def send(
        self, messages: Sequence[Message], *, idempotency_key: str | None = None
    ) -> list[SendResult]:
        """Send every message; one result per message, in input order. Never raises for one.

        With an idempotent provider every request carries a key derived from
        ``idempotency_key`` (see :meth:`_plan`); without one, a random key still makes this
        call's own retries safe, though not a rerun after a crash.
        """
        if self._closed:
            raise ProviderError(f"{type(self).__name__} is closed")
        if not messages:
            return []
        results: list[SendResult | None] = [None] * len(messages)
        entries: list[Entry] = []
        for index, message in enumerate(messages):
            try:
                entries.append(Entry(index, message, self.build_item(message)))
            except ValueError as exc:
                reason = self._redact(str(exc))
                logger.warning(
                    "%s: send %s to %s not sent: %s",
                    self.name,
                    message.send_id,
                    mask_email(message.to_email),
                    reason,
                )
                results[index] = self._result(message, "failed", error=reason, attempts=0)

        key = idempotency_key
        if key is None and self.limits.idempotent:
            key = uuid.uuid4().hex
        requests = self._plan(entries, key, results)
        futures = [self._executor.submit(self._run, request) for request in requests]
        for future in futures:
            for index, result in future.result():
                results[index] = result

        final = [r for r in results if r is not None]
        assert len(final) == len(messages), "every message gets exactly one result"
        counts = {s: sum(r.status == s for r in final) for s in ("sent", "failed", "unknown")}
        logger.info(
            "%s: %d sent, %d failed, %d unknown (%d messages, %d requests)",
            self.name,
            counts["sent"],
            counts["failed"],
            counts["unknown"],
            len(final),
            len(requests),
        )
        return final

    def close(self) -> None:
        """Cancel queued requests, wait for in-flight ones, close the pool. Safe to call twice.

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
        _HTTPX_LOG_REDACTOR.unregister(self._url_secrets)

    # -- planning: which messages go in which request ----------------------------------------

    def _plan(
        self, entries: list[Entry], key: str | None, results: list[SendResult | None]
    ) -> list[_Request]:
        """Cut the messages into requests, deterministically, each with its own key.

        Entries are ordered by send_id first, so the same batch is cut the same way on every
        run whatever order the caller listed it in: a rerun after a crash then sends the same
        requests with the same keys, and the provider recognises them instead of delivering
        twice. A request's key is the batch key when there is one request, else
        ``f"{key}-{i}"``; a request split later (too large, or rejected) gives its halves
        ``f"{its key}-0"`` and ``-1``, by the same reasoning.
        """
        ordered = sorted(entries, key=lambda e: (e.message.send_id, e.index))
        chunks = self.chunks(ordered)
        requests: list[_Request] = []
        for i, chunk in enumerate(chunks):
            chunk_key = self._fit_key(key) if len(chunks) == 1 else self._child_key(key, i)
            requests.extend(self._fit(chunk, chunk_key, results))
        return requests

    def _fit(
        self, entries: list[Entry], key: str | None, results: list[SendResult | None]
    ) -> list[_Request]:
        """One request, or halves of it until each fits ``max_request_bytes``."""
        body = self.encode([e.item for e in entries])
        limit = self.limits.max_request_bytes
        if limit is None or len(body) <= limit:
            return [_Request(entries, body, key)]
        if len(entries) == 1:
            (entry,) = entries
            reason = (
                f"message is {len(body)} bytes as a request, over {self.display_name}'s "
                f"limit of {limit} bytes"
            )
            logger.warning("%s: send %s not sent: %s", self.name, entry.message.send_id, reason)
            results[entry.index] = self._result(entry.message, "failed", error=reason, attempts=0)
            return []
        middle = len(entries) // 2
        return [
            *self._fit(entries[:middle], self._child_key(key, 0), results),
            *self._fit(entries[middle:], self._child_key(key, 1), results),
        ]

    def _child_key(self, key: str | None, index: int) -> str | None:
        return None if key is None else self._fit_key(f"{key}-{index}")

    def _fit_key(self, key: str | None) -> str | None:
        """The key itself, or its SHA-256 when too long: still deterministic and distinct."""
        if key is not None and len(key) > self.max_idempotency_key_length:
            return hashlib.sha256(key.encode()).hexdigest()
        return key

    # -- running one request ---------------------------------------------------------------

    def _run(self, request: _Request) -> list[tuple[int, SendResult]]:
        """Never raises: whatever happens becomes a result for each of the request's messages.

        An exception escaping here would surface from ``send()`` and lose the results of
        messages that were already accepted, and the caller would send them again.
        """
        try:
            return self._deliver(request)
        except Exception as exc:
            reason = self._redact(f"unexpected error: {type(exc).__name__}: {exc}")
            logger.error("%s: %s: %s", self.name, request.label, reason)
            # Whether a request went out before the error is not known here: 'unknown' is the
            # answer that cannot lead to a second delivery.
            return self._settle(request, "unknown", reason, attempts=0)

    def _deliver(self, request: _Request) -> list[tuple[int, SendResult]]:
        attempts = 0
        rate_waited = 0.0
        rate_limited_answers = 0
        maybe_delivered = False
        reason = ""
        while True:
            blocked = self._rate_limited_for()
            if blocked > 0 and rate_waited + blocked > self.max_rate_limit_wait:
                why = (
                    f"{self.display_name} is rate limiting this account for another "
                    f"{blocked:.1f}s, more than max_rate_limit_wait="
                    f"{self.max_rate_limit_wait:g}s allows (waited {rate_waited:.1f}s)"
                )
                reason = f"{reason}; {why}" if reason else f"not sent: {why}"
                return self._give_up(request, reason, attempts, maybe_delivered)
            if blocked > 0:
                rate_waited += blocked
                self._limiter.pause_for(blocked)
            self._limiter.acquire()

            with self._state_lock:
                self.requests_made += 1
            try:
                response = self._client.post(
                    self._url,
                    content=request.body,
                    headers=self.request_headers(request.body, request.key),
                )
            except RETRYABLE_TRANSPORT_ERRORS as exc:
                rejection = Rejection("transient", self._transport_reason(exc))
            except UNSENT_TRANSPORT_ERRORS as exc:
                rejection = Rejection("permanent", self._transport_reason(exc))
            except UNCERTAIN_TRANSPORT_ERRORS as exc:
                rejection = Rejection("uncertain", self._transport_reason(exc))
            except httpx.HTTPError as exc:
                # Anything else (a DecodingError reading the answer, ...) may also come after
                # the provider took the request.
                rejection = Rejection("uncertain", self._transport_reason(exc))
            else:
                self._note_window(response)
                if 200 <= response.status_code < 300:
                    return self._accepted(request, response, attempts + 1)
                rejection = self.classify(response)
            reason = self._redact(rejection.reason)

            if rejection.fate == "rate_limited":
                rate_limited_answers += 1
                if rate_limited_answers > MAX_RATE_LIMITED_ANSWERS:
                    reason += f"; still rate limited after {rate_limited_answers} answers"
                    return self._give_up(request, reason, attempts, maybe_delivered)
                wait = rejection.wait
                if wait is None:
                    wait = self._backoff(rate_limited_answers)
                if rejection.exhausted:
                    # Nothing to wait for in this run: make every request fail fast.
                    wait = max(wait, self.max_rate_limit_wait + 1.0)
                self._block_for(wait)
                logger.warning(
                    "%s: %s rate limited (%s); %s %.2fs",
                    self.name,
                    request.label,
                    mask_emails_in_text(reason),
                    "all workers wait" if wait <= self.max_rate_limit_wait else "told to wait",
                    wait,
                )
                continue

            attempts += 1
            fate = rejection.fate
            if fate == "uncertain":
                maybe_delivered = True
                if not (self.limits.idempotent and request.key is not None):
                    return self._give_up(
                        request,
                        f"{reason}; {self.display_name} may have accepted it, not retried",
                        attempts,
                        maybe_delivered,
                    )
                fate = "transient"  # resent with the same key: the provider deduplicates
            if fate == "transient" and attempts < self.max_attempts:
                if rejection.wait is not None:
                    delay = min(rejection.wait, self.backoff_max)
                else:
                    delay = self._backoff(attempts)
                logger.warning(
                    "%s: %s attempt %d/%d failed (%s); retrying in %.2fs",
                    self.name,
                    request.label,
                    attempts,
                    self.max_attempts,
                    mask_emails_in_text(reason),
                    delay,
                )
                self._sleep(delay)
                continue
            if fate == "transient":
                return self._give_up(request, reason, attempts, maybe_delivered)
            if fate in ("invalid", "too_large"):
                # The provider judged this very payload, under the same key if an earlier
                # attempt was lost (it would have replayed that answer had it been accepted):
                # an authoritative "no", whatever happened before.
                maybe_delivered = False
                splittable = len(request.entries) > 1 and (
                    fate == "too_large" or not self.limits.per_message_results
                )
                if splittable:
                    return self._split(request, reason, attempts)
            if fate == "conflict" or maybe_delivered:
                return self._give_up(request, reason, attempts, maybe_delivered=True)
            logger.warning(
                "%s: %s rejected, not retrying: %s",
                self.name,
                request.label,
                mask_emails_in_text(reason),
            )
            return self._settle(request, "failed", reason, attempts)

    def _split(self, request: _Request, reason: str, attempts: int) -> list[tuple[int, SendResult]]:
        """Resend the two halves of a rejected all-or-nothing request, to isolate bad rows.

        Worst case (every row bad) costs 2n-1 requests for n rows; a batch with one bad row
        costs about 2*log2(n). The halves run in this worker, one after the other: submitting
        them to the pool and waiting could deadlock a full pool.
        """
        middle = len(request.entries) // 2
        logger.info(
            "%s: %s rejected (%s); splitting it to isolate the rejected rows",
            self.name,
            request.label,
            mask_emails_in_text(reason),
        )
        out: list[tuple[int, SendResult]] = []
        for i, half in enumerate((request.entries[:middle], request.entries[middle:])):
            child = _Request(
                half,
                self.encode([e.item for e in half]),
                self._child_key(request.key, i),
                request.prior_attempts + attempts,
            )
            out.extend(self._deliver(child))
        return out

    def _give_up(
        self, request: _Request, reason: str, attempts: int, maybe_delivered: bool
    ) -> list[tuple[int, SendResult]]:
        """Nothing more to try: 'unknown' if a request may have got through, else retryable."""
        if maybe_delivered:
            logger.warning(
                "%s: %s may have been accepted (%s); not resent",
                self.name,
                request.label,
                mask_emails_in_text(reason),
            )
            return self._settle(request, "unknown", reason, attempts)
        logger.warning(
            "%s: %s failed after %d attempts: %s",
            self.name,
            request.label,
            attempts,
            mask_emails_in_text(reason),
        )
        return self._settle(request, "failed", reason, attempts, retryable=True)

    def _accepted(
        self, request: _Request, response: httpx.Response, attempts: int
    ) -> list[tuple[int, SendResult]]:
        deliveries = self.parse_accepted(response, request.entries)
        if len(deliveries) != len(request.entries):
            reason = (
                f"{self.display_name} answered HTTP {response.status_code} with "
                f"{len(deliveries)} results for {len(request.entries)} messages"
            )
            return self._give_up(request, reason, attempts, maybe_delivered=True)
        out = []
        total = request.prior_attempts + attempts
        for entry, delivery in zip(request.entries, deliveries, strict=True):
            error = self._redact(delivery.error) if delivery.error else None
            if delivery.status == "sent":
                logger.debug(
                    "%s: send %s to %s accepted (attempt %d)",
                    self.name,
                    entry.message.send_id,
                    mask_email(entry.message.to_email),
                    total,
                )
            else:
                logger.warning(
                    "%s: send %s to %s %s: %s",
                    self.name,
                    entry.message.send_id,
                    mask_email(entry.message.to_email),
                    "failed" if delivery.status == "failed" else "is unknown",
                    mask_emails_in_text(error or ""),
                )
            out.append(
                (
                    entry.index,
                    self._result(
                        entry.message,
                        delivery.status,
                        message_id=delivery.message_id,
                        error=error,
                        attempts=total,
                        retryable=delivery.retryable and delivery.status == "failed",
                    ),
                )
            )
        return out

    def _settle(
        self,
        request: _Request,
        status: SendStatus,
        reason: str,
        attempts: int,
        *,
        retryable: bool = False,
    ) -> list[tuple[int, SendResult]]:
        total = request.prior_attempts + attempts
        return [
            (
                e.index,
                self._result(e.message, status, error=reason, attempts=total, retryable=retryable),
            )
            for e in request.entries
        ]

    def _result(
        self,
        message: Message,
        status: SendStatus,
        *,
        message_id: str | None = None,
        error: str | None = None,
        attempts: int = 1,
        retryable: bool = False,
    ) -> SendResult:
        # Errors land in the ledger and in run metadata: no secrets, no addresses.
        return SendResult(
            send_id=message.send_id,
            status=status,
            provider_message_id=message_id,
            error=mask_emails_in_text(error) if error else None,
            attempts=attempts,
            retryable=retryable,
        )

    # -- rate limiting ---------------------------------------------------------------------

    def _block_for(self, seconds: float) -> None:
        """The provider said "not before now + seconds": every request of this provider waits.

        Within the budget, the shared limiter pauses every worker. Beyond it, requests check
        :meth:`_rate_limited_for` before going out and fail fast instead of each spending a
        request to be told the same thing.
        """
        deadline = self._clock() + max(0.0, seconds)
        with self._state_lock:
            self._blocked_until = max(self._blocked_until, deadline)
        if seconds <= self.max_rate_limit_wait:
            self._limiter.pause_until(deadline)

    def _rate_limited_for(self) -> float:
        with self._state_lock:
            until = self._blocked_until
        return max(0.0, until - self._clock())

    def _note_window(self, response: httpx.Response) -> None:
        """A successful answer saying the window is spent pauses everyone until it resets."""
        if response.status_code == 429 or not window_spent(response.headers):
            return
        reset = rate_limit_wait(response.headers)
        if reset is not None and 0 < reset <= self.max_rate_limit_wait:
            self._limiter.pause_for(reset)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_max, self._jitter)

    # -- texts -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _transport_reason(self, exc: httpx.HTTPError) -> str:
        return self._redact(describe_transport_error(exc, self.timeout))

    # -- hooks for adapters ----------------------------------------------------------------

    def build_item(self, message: Message) -> Any:
        """The JSON item for one message; ``ValueError`` if it cannot be sent at all."""
        raise NotImplementedError

    def encode(self, items: list[Any]) -> bytes:
        """The body of one request carrying ``items`` (default: a JSON array)."""
        return json.dumps(items).encode("utf-8")

    def chunks(self, entries: list[Entry]) -> list[list[Entry]]:
        """Group entries into requests (default: runs of ``batch_size``)."""
        size = self.batch_size
        return [entries[i : i + size] for i in range(0, len(entries), size)]

    def request_headers(self, body: bytes, key: str | None) -> dict[str, str]:
        """Headers of one attempt (called again on every retry)."""
        if key is not None and self.limits.idempotent:
            return {"Idempotency-Key": key}
        return {}

    def parse_accepted(self, response: httpx.Response, entries: list[Entry]) -> list[Delivery]:
        """Per-message outcome of a 2xx answer, aligned with ``entries`` (default: all sent)."""
        return [Delivery("sent") for _ in entries]

    def error_text(self, response: httpx.Response) -> str:
        """The provider's own words for a failed request."""
        data = json_or_none(response)
        if isinstance(data, dict):
            for name in ("message", "Message", "error", "detail"):
                value = data.get(name)
                if isinstance(value, str) and value:
                    return value
        return body_excerpt(response)

    def classify(self, response: httpx.Response) -> Rejection:
        """Decide what a non-2xx answer means; adapters refine it for their quirks."""
        status = response.status_code
        reason = f"HTTP {status}: {self.error_text(response)}"
        if status == 429:
            return Rejection("rate_limited", reason, wait=rate_limit_wait(response.headers))
        if status == 408 or status >= 500:
            return Rejection(
                "transient", reason, wait=parse_retry_after(response.headers.get("Retry-After"))
            )
        if status == 413:
            return Rejection("too_large", reason)
        if status in (400, 422):
            return Rejection("invalid", reason)
        if status == 409 and self.limits.idempotent:
            return Rejection("conflict", reason)
        return Rejection("permanent", reason)
