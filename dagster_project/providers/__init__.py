"""Email providers: the :class:`Provider` interface, its adapters and the registry that picks one.

``NUDGE_ESP`` chooses the adapter: ``outbox`` (default; writes ``.eml`` files, needs no
account), ``sendgrid``, ``postmark``, ``resend``, ``ses``, ``smtp`` or ``webhook``. Everything
else in nudge depends only on :class:`Provider`, so adding an ESP means one new module and one
builder in :data:`BUILDERS`. Adapters are imported lazily: a run pays for botocore only when
it sends through SES.

Layout: ``base.py`` (the interface), one module per adapter, and the shared cores they are
built from: ``http.py`` (JSON over HTTP, batches), ``fanout.py`` (one request per message),
``pool.py`` (worker threads), ``retry.py`` (fates and backoff), ``wire.py`` (the HTTP client and
reading answers), ``redaction.py`` (secrets out of errors and logs), ``ratelimit.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_project.providers.base import (
    HandoverError,
    Journal,
    Message,
    Provider,
    ProviderConfigError,
    ProviderError,
    ProviderLimits,
    SendResult,
)
from dagster_project.providers.outbox import OutboxProvider, write_outbox_index_html

__all__ = [
    "BUILDERS",
    "HandoverError",
    "Journal",
    "Message",
    "OutboxProvider",
    "Provider",
    "ProviderConfigError",
    "ProviderError",
    "ProviderLimits",
    "ProviderSettings",
    "SendResult",
    "build_provider",
    "write_outbox_index_html",
]


@dataclass(frozen=True)
class ProviderSettings:
    """What building a provider needs: the ``NUDGE_ESP*`` settings and the worker tuning."""

    esp: str = "outbox"
    base_url: str | None = None  # None: the provider's public API
    api_key: str | None = field(default=None, repr=False)
    outbox_dir: Path = Path(".nudge/outbox")
    # Non-secret provider options (config.ESP_OPTION_VARS), only the ones set.
    options: dict[str, str] = field(default_factory=dict)
    smtp_password: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    max_concurrency: int = 8
    max_attempts: int = 5


# What NUDGE_ESP_API_KEY holds for each provider that needs one.
_API_KEY_NAMES = {
    "sendgrid": "a SendGrid API key with Mail Send permission",
    "postmark": "a Postmark server token",
    "resend": "a Resend API key",
}


def _flag(value: str | None, name: str) -> bool | None:
    """true/false/auto (None) from an environment string."""
    text = (value or "").strip().lower()
    if text in ("", "auto"):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ProviderConfigError(f"{name} must be true, false or auto, got {value!r}")


def _number(options: dict[str, str], key: str, var: str, kind: type = float) -> Any:
    if key not in options:
        return None
    try:
        return kind(options[key])
    except ValueError:
        raise ProviderConfigError(f"{var}={options[key]!r} is not a number") from None


def _common(settings: ProviderSettings) -> dict[str, Any]:
    """Worker tuning every pooled adapter takes."""
    common: dict[str, Any] = {
        "timeout": settings.timeout,
        "max_concurrency": settings.max_concurrency,
        "max_attempts": settings.max_attempts,
    }
    rate = _number(settings.options, "requests_per_second", "NUDGE_ESP_RATE_LIMIT")
    if rate is not None:
        common["requests_per_second"] = rate
    return common


def _base_url(settings: ProviderSettings) -> dict[str, Any]:
    return {"base_url": settings.base_url} if settings.base_url else {}


def _outbox(settings: ProviderSettings) -> Provider:
    return OutboxProvider(settings.outbox_dir)


def _sendgrid(settings: ProviderSettings) -> Provider:
    from dagster_project.providers.sendgrid import DEFAULT_BASE_URL, SendGridProvider

    return SendGridProvider(
        settings.api_key or "",
        settings.base_url or DEFAULT_BASE_URL,
        template_id=settings.options.get("template_id"),
        **_common(settings),
    )


def _postmark(settings: ProviderSettings) -> Provider:
    from dagster_project.providers.postmark import PostmarkProvider

    stream: dict[str, Any] = {}
    if "message_stream" in settings.options:
        stream["message_stream"] = settings.options["message_stream"]
    return PostmarkProvider(
        settings.api_key or "", **_base_url(settings), **stream, **_common(settings)
    )


def _resend(settings: ProviderSettings) -> Provider:
    from dagster_project.providers.resend import ResendProvider

    return ResendProvider(settings.api_key or "", **_base_url(settings), **_common(settings))


def _ses(settings: ProviderSettings) -> Provider:
    from dagster_project.providers.ses import SesProvider

    return SesProvider(
        region=settings.options.get("region"),
        endpoint_url=settings.base_url,
        configuration_set=settings.options.get("configuration_set"),
        **_common(settings),
    )


def _smtp(settings: ProviderSettings) -> Provider:
    from dagster_project.providers.smtp import SmtpProvider

    options = settings.options
    host = options.get("smtp_host")
    if not host:
        raise ProviderConfigError("NUDGE_SMTP_HOST is not set; it is required for NUDGE_ESP=smtp")
    port = _number(options, "smtp_port", "NUDGE_SMTP_PORT", int)
    common = _common(settings)
    # One connection per worker: MTAs limit concurrent connections per client.
    common["max_concurrency"] = min(settings.max_concurrency, 4)
    return SmtpProvider(
        host,
        port or 587,
        username=options.get("smtp_username"),
        password=settings.smtp_password,
        starttls=_flag(options.get("smtp_starttls", "true"), "NUDGE_SMTP_STARTTLS"),
        ssl=bool(_flag(options.get("smtp_ssl", "false"), "NUDGE_SMTP_SSL")),
        **common,
    )


def _webhook(settings: ProviderSettings) -> Provider:
    from dagster_project.providers.webhook import WebhookProvider

    url = settings.options.get("webhook_url") or settings.base_url
    if not url or not settings.webhook_secret:
        raise ProviderConfigError(
            "NUDGE_ESP=webhook needs NUDGE_WEBHOOK_URL and NUDGE_WEBHOOK_SECRET (the HMAC key)"
        )
    idempotent = _flag(
        settings.options.get("webhook_idempotent", "false"), "NUDGE_WEBHOOK_IDEMPOTENT"
    )
    return WebhookProvider(
        url, settings.webhook_secret, idempotent=bool(idempotent), **_common(settings)
    )


# NUDGE_ESP -> the function that builds that adapter from the settings.
BUILDERS: dict[str, Callable[[ProviderSettings], Provider]] = {
    "outbox": _outbox,
    "sendgrid": _sendgrid,
    "postmark": _postmark,
    "resend": _resend,
    "ses": _ses,
    "smtp": _smtp,
    "webhook": _webhook,
}
VALID_ESPS = tuple(BUILDERS)


def build_provider(settings: ProviderSettings) -> Provider:
    """Return the provider named by ``settings.esp``.

    Raises :class:`ProviderConfigError` for an unknown ESP or a missing credential, before
    anything is sent, so a misconfigured run fails at startup instead of after rendering every
    email. Credentials' values are never part of any message.
    """
    esp = (settings.esp or "").strip().lower()
    builder = BUILDERS.get(esp)
    if builder is None:
        raise ProviderConfigError(
            f"Unknown NUDGE_ESP {settings.esp!r}; valid choices: {', '.join(VALID_ESPS)}"
        )
    if esp in _API_KEY_NAMES and not settings.api_key:
        raise ProviderConfigError(
            f"NUDGE_ESP_API_KEY is not set; it is required when NUDGE_ESP={esp}. Set it to "
            f"{_API_KEY_NAMES[esp]}, or use NUDGE_ESP=outbox to write emails to local files."
        )
    return builder(settings)
