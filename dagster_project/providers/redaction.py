"""Keeping secrets out of errors and logs: checked credentials, URLs shown without them.

Secrets (API keys, tokens, HMAC secrets) live in a client's default headers or an adapter
only; every text that can reach an error, a log line or ``repr`` is scrubbed of them, and
httpx's own request log lines are filtered for credentials embedded in a URL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import httpx

from dagster_project.providers.base import ProviderConfigError

REDACTED = "[REDACTED]"


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


HTTPX_LOG_REDACTOR = _HttpxLogRedactor()
logging.getLogger("httpx").addFilter(HTTPX_LOG_REDACTOR)
