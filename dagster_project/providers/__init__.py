"""Email providers: the :class:`Provider` interface, its adapters and the factory that picks one.

``NUDGE_ESP`` chooses the adapter: ``outbox`` (default; writes ``.eml`` files, needs no account)
or ``sendgrid``. Everything else in nudge depends only on :class:`Provider`, so adding an ESP
means one new module and one branch in :func:`build_provider`.
"""

from __future__ import annotations

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

VALID_ESPS = ("outbox", "sendgrid")


def build_provider(
    settings: Settings,
    *,
    timeout: float = 10.0,
    max_concurrency: int = 8,
    max_attempts: int = 5,
) -> Provider:
    """Return the provider named by ``settings.esp``.

    Raises :class:`ProviderConfigError` for an unknown ESP or a missing API key, before anything
    is sent, so a misconfigured run fails at startup instead of after rendering every email.
    The key's value is never part of any message.
    """
    esp = (settings.esp or "").strip().lower()
    if esp == "outbox":
        return OutboxProvider(settings.outbox_dir)
    if esp == "sendgrid":
        if not settings.esp_api_key:
            raise ProviderConfigError(
                "NUDGE_ESP_API_KEY is not set; it is required when NUDGE_ESP=sendgrid. "
                "Set it to a SendGrid API key with Mail Send permission, "
                "or use NUDGE_ESP=outbox to write emails to local files instead."
            )
        return SendGridProvider(
            settings.esp_api_key,
            settings.esp_base_url,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
        )
    raise ProviderConfigError(
        f"Unknown NUDGE_ESP {settings.esp!r}; valid choices: {', '.join(VALID_ESPS)}"
    )
