"""Email providers: the :class:`Provider` interface, its adapters and the factory that picks one.

``NUDGE_ESP`` chooses the adapter: ``outbox`` (default; writes ``.eml`` files, needs no
account), ``sendgrid``, ``postmark``, ``resend``, ``ses``, ``smtp`` or ``webhook``. Everything
else in nudge depends only on :class:`Provider`, so adding an ESP means one new module and one
branch in :func:`build_provider`. Adapters are imported lazily: a run pays for botocore only
when it sends through SES.
"""

from __future__ import annotations

from typing import Any

from dagster_project.config import Settings
from dagster_project.providers.base import (
    Message,
    Provider,
    ProviderConfigError,
    ProviderError,
    ProviderLimits,
    SendResult,
)
from dagster_project.providers.outbox import OutboxProvider, write_outbox_index_html
from dagster_project.providers.sendgrid import SendGridProvider

__all__ = [
    "VALID_ESPS",
    "Message",
    "OutboxProvider",
    "Provider",
    "ProviderConfigError",
    "ProviderError",
    "ProviderLimits",
    "SendGridProvider",
    "SendResult",
    "build_provider",
    "write_outbox_index_html",
]

VALID_ESPS = ("outbox", "sendgrid", "postmark", "resend", "ses", "smtp", "webhook")

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


def build_provider(
    settings: Settings,
    *,
    timeout: float = 10.0,
    max_concurrency: int = 8,
    max_attempts: int = 5,
) -> Provider:
    """Return the provider named by ``settings.esp``.

    Raises :class:`ProviderConfigError` for an unknown ESP or a missing credential, before
    anything is sent, so a misconfigured run fails at startup instead of after rendering every
    email. Credentials' values are never part of any message.
    """
    esp = (settings.esp or "").strip().lower()
    options = settings.esp_options
    common: dict[str, Any] = {
        "timeout": timeout,
        "max_concurrency": max_concurrency,
        "max_attempts": max_attempts,
    }
    rate = _number(options, "requests_per_second", "NUDGE_ESP_RATE_LIMIT")
    if rate is not None:
        common["requests_per_second"] = rate
    base_url: dict[str, Any] = {"base_url": settings.esp_base_url} if settings.esp_base_url else {}

    if esp == "outbox":
        return OutboxProvider(settings.outbox_dir)
    if esp in _API_KEY_NAMES and not settings.esp_api_key:
        raise ProviderConfigError(
            f"NUDGE_ESP_API_KEY is not set; it is required when NUDGE_ESP={esp}. Set it to "
            f"{_API_KEY_NAMES[esp]}, or use NUDGE_ESP=outbox to write emails to local files."
        )
    key = settings.esp_api_key or ""
    if esp == "sendgrid":
        return SendGridProvider(
            key,
            settings.esp_base_url or "https://api.sendgrid.com",
            template_id=options.get("template_id"),
            **common,
        )
    if esp == "postmark":
        from dagster_project.providers.postmark import PostmarkProvider

        stream: dict[str, Any] = {}
        if "message_stream" in options:
            stream["message_stream"] = options["message_stream"]
        return PostmarkProvider(key, **base_url, **stream, **common)
    if esp == "resend":
        from dagster_project.providers.resend import ResendProvider

        return ResendProvider(key, **base_url, **common)
    if esp == "ses":
        from dagster_project.providers.ses import SesProvider

        return SesProvider(
            region=options.get("region"),
            endpoint_url=settings.esp_base_url,
            configuration_set=options.get("configuration_set"),
            **common,
        )
    if esp == "smtp":
        from dagster_project.providers.smtp import SmtpProvider

        host = options.get("smtp_host")
        if not host:
            raise ProviderConfigError(
                "NUDGE_SMTP_HOST is not set; it is required for NUDGE_ESP=smtp"
            )
        port = _number(options, "smtp_port", "NUDGE_SMTP_PORT", int)
        return SmtpProvider(
            host,
            port or 587,
            username=options.get("smtp_username"),
            password=settings.smtp_password,
            starttls=_flag(options.get("smtp_starttls", "true"), "NUDGE_SMTP_STARTTLS"),
            ssl=bool(_flag(options.get("smtp_ssl", "false"), "NUDGE_SMTP_SSL")),
            **{k: v for k, v in common.items() if k != "max_concurrency"},
            max_concurrency=min(max_concurrency, 4),
        )
    if esp == "webhook":
        from dagster_project.providers.webhook import WebhookProvider

        url = options.get("webhook_url") or settings.esp_base_url
        if not url or not settings.webhook_secret:
            raise ProviderConfigError(
                "NUDGE_ESP=webhook needs NUDGE_WEBHOOK_URL and NUDGE_WEBHOOK_SECRET (the HMAC key)"
            )
        return WebhookProvider(
            url,
            settings.webhook_secret,
            idempotent=bool(
                _flag(options.get("webhook_idempotent", "false"), "NUDGE_WEBHOOK_IDEMPOTENT")
            ),
            **common,
        )
    raise ProviderConfigError(
        f"Unknown NUDGE_ESP {settings.esp!r}; valid choices: {', '.join(VALID_ESPS)}"
    )
