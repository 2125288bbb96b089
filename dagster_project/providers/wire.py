"""Reading the wire: the HTTP client nudge's providers share, and what an answer says.

Everything here is about HTTP itself, not about any one provider: which transport errors mean
"nothing left this machine" and which mean "the provider may have it", how long a 429 asks us
to wait (``Retry-After``, the ``RateLimit-*`` headers), and a provider's error body made short
enough for a ledger row.
"""

from __future__ import annotations

import functools
import math
import ssl
import threading
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

MAX_ERROR_BODY = 300
# Some providers send the reset as a Unix timestamp (seconds or ms), others as seconds to wait.
_EPOCH_THRESHOLD = 1_000_000_000

# The request never left the client (no connection, or no free connection in the pool): safe
# to retry, nothing can have been delivered.
RETRYABLE_TRANSPORT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# Raised before a byte of the request was sent (bad URL scheme, a header httpx refuses):
# retrying cannot help and nothing was delivered.
UNSENT_TRANSPORT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)

TransportFate = Literal["transient", "permanent", "uncertain"]


def transport_fate(exc: httpx.HTTPError) -> TransportFate:
    """What an httpx error means for the request, the same for every HTTP provider.

    Anything but a connection that never opened or a request httpx refused to write (a read
    timeout, a dropped connection, a DecodingError reading the answer, ...) may come after the
    provider took the request: ``uncertain``, resent only with the same idempotency key.
    """
    if isinstance(exc, RETRYABLE_TRANSPORT_ERRORS):
        return "transient"
    if isinstance(exc, UNSENT_TRANSPORT_ERRORS):
        return "permanent"
    return "uncertain"


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle (~20 ms)."""
    return httpx.create_ssl_context()


class WireClient:
    """What a provider's worker threads POST through: one keep-alive connection per worker.

    Not an :class:`httpx.Client`: a provider POSTs JSON to one fixed URL and reads the answer
    whole, so the client's layers around the transport (cookie jar, auth flow, redirects, event
    hooks, URL merging) were per-request work for nothing, over a third of a one-message
    request's CPU; and one connection pool shared by eight threads serialised them on its lock.
    Each worker thread gets its own :class:`httpx.HTTPTransport` (one connection, reused), and
    the request goes straight to it, with the same timeouts and TLS verification. Proxies from
    the environment (``HTTPS_PROXY``, ``NO_PROXY``, ...) are honoured as a client would, decided
    once for the provider's host. Redirects are never followed. An injected ``transport`` (an
    ``httpx.MockTransport`` in tests) is used as is by every thread.
    """

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._headers = httpx.Headers(headers)
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._injected = transport
        self._urls: dict[str, httpx.URL] = {}
        self._local = threading.local()
        self._transports: list[httpx.BaseTransport] = []
        self._lock = threading.Lock()
        self._closed = False

    def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """POST ``content`` and read the whole answer; raises :class:`httpx.HTTPError`."""
        merged = self._headers.copy()
        if headers:
            merged.update(headers)
        # Parsed once per address: a provider POSTs to one or two, thousands of times.
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        request = httpx.Request(
            "POST", parsed, content=content, headers=merged, extensions={"timeout": self._timeout}
        )
        response = self._transport(request.url).handle_request(request)
        response.request = request
        try:
            response.read()
        finally:
            response.close()
        return response

    def close(self) -> None:
        """Close every worker's connection; a post after this raises."""
        with self._lock:
            self._closed = True
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()
        if self._injected is not None:
            self._injected.close()

    def _transport(self, url: httpx.URL) -> httpx.BaseTransport:
        if self._closed:
            raise httpx.ConnectError("the provider's client is closed")
        if self._injected is not None:
            return self._injected
        transport: httpx.BaseTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = httpx.HTTPTransport(
                verify=_ssl_context(),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                proxy=_environment_proxy(url),
            )
            with self._lock:
                if self._closed:  # closed while this one was being built
                    transport.close()
                    raise httpx.ConnectError("the provider's client is closed")
                self._transports.append(transport)
            self._local.transport = transport
        return transport


def _environment_proxy(url: httpx.URL) -> str | None:
    """The proxy ``*_PROXY`` names for ``url``, unless ``NO_PROXY`` exempts its host."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy


def describe_transport_error(exc: httpx.HTTPError, timeout: float) -> str:
    """``"ReadTimeout: ... (timeout 10s)"``: an httpx error for a result; redact it before use."""
    detail = str(exc) or "no detail"
    if isinstance(exc, httpx.TimeoutException):
        detail = f"{detail} (timeout {timeout:g}s)"
    return f"{type(exc).__name__}: {detail}"


# -- what an answer says ------------------------------------------------------------------


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
