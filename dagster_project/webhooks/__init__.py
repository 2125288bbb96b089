"""Provider event webhooks: verify a request, then parse its events into :class:`EmailEvent`.

Pure functions over (headers, body, settings, now): no Dagster, no web framework, and no I/O
except fetching SNS signing certificates (through an injectable fetcher). One module per
provider: :mod:`.sendgrid`, :mod:`.postmark`, :mod:`.ses` (with :mod:`.sns`), :mod:`.resend`
and :mod:`.nudge` (nudge's own format, provider name ``webhook``); :mod:`.base` holds the
contract and :func:`receive` routes a request to its provider.
"""

from dagster_project.webhooks.base import (
    BOUNCE_TYPES,
    EVENT_TYPES,
    PROVIDERS,
    EmailEvent,
    Parsed,
    Rejected,
    WebhookSettings,
)
from dagster_project.webhooks.dispatch import receive
from dagster_project.webhooks.sns import confirm_subscription

__all__ = [
    "BOUNCE_TYPES",
    "EVENT_TYPES",
    "PROVIDERS",
    "EmailEvent",
    "Parsed",
    "Rejected",
    "WebhookSettings",
    "confirm_subscription",
    "receive",
]
