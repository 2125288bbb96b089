"""The contract every provider's event webhook is parsed into.

Each email provider reports what happened to a message (delivered, bounced, opened...) in
its own shape, signed its own way. nudge stores one shape, :class:`EmailEvent`, so the
warehouse joins events back to sends (``send_id``) without caring who sent the mail.

Why the pieces look the way they do:

* ``event_id`` is the dedupe key. Every provider retries a webhook it thinks failed, so the
  same event arrives more than once; the id is ``"<provider>:<provider's event id>"`` when the
  provider gives one (stable across its retries) and otherwise ``"<provider>:sha256:<hex>"``,
  a hash of the event's canonical JSON (sorted keys, no spaces), which a retry reproduces
  byte for byte.
* ``payload`` keeps the one event's raw JSON (compact) for audit: the normalized columns are
  nudge's reading of it, the payload is what the provider actually said.
* :class:`Rejected` carries an HTTP status and a short reason the web service can answer
  with as is. Reasons never contain secrets nor any part of the body. 401 means the
  credentials or signature are missing, 403 that they are present but wrong (or the request
  is stale), 400 a body that cannot be read, 404 an unknown provider, 503 a provider nudge
  is not configured for (so the provider retries once it is).
* :class:`WebhookSettings` reads only ``NUDGE_*`` variables, and its ``repr`` says which
  providers are configured without showing a key, password or secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

EVENT_TYPES = (
    "delivered",
    "deferred",
    "bounced",
    "complained",
    "unsubscribed",
    "opened",
    "clicked",
    "dropped",
)
BOUNCE_TYPES = ("hard", "soft", "undetermined")

PROVIDERS = ("sendgrid", "postmark", "ses", "resend", "webhook")

DEFAULT_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class EmailEvent:
    """One thing that happened to one message for one recipient, as nudge stores it."""

    event_id: str
    provider: str
    provider_event_id: str | None
    send_id: str | None
    email: str | None
    event_type: str
    bounce_type: str | None
    is_machine_open: bool
    url: str | None
    occurred_at: datetime
    payload: str | None  # null once the address was erased


class Rejected(Exception):
    """The request is refused: answer it with ``status`` and ``reason``.

    ``reason`` is short, human and safe to send back: it never quotes a secret or the body.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type[Rejected], tuple[int, str]]:
        # Exceptions pickle through their args; this one is built from (status, reason).
        return (Rejected, (self.status, self.reason))


@dataclass(frozen=True)
class Parsed:
    """What one authentic webhook request said.

    ``ignored`` counts well-formed events nudge does not track (SendGrid ``processed``,
    Resend ``email.sent``...) and events it could not read (an unknown type, no timestamp):
    they are acknowledged so the provider stops retrying them, and not stored.
    ``subscribe_url`` is set only for an SNS ``SubscriptionConfirmation``.
    """

    events: list[EmailEvent]
    ignored: int = 0
    subscribe_url: str | None = None


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = (environ.get(name) or "").strip()
    return value or None


@dataclass(frozen=True)
class WebhookSettings:
    """Per-provider verification settings, each ``None`` (or empty) when not configured."""

    sendgrid_public_key: str | None = field(default=None, repr=False)
    postmark_user: str | None = field(default=None, repr=False)
    postmark_password: str | None = field(default=None, repr=False)
    ses_topic_arns: tuple[str, ...] = ()
    resend_secret: str | None = field(default=None, repr=False)
    nudge_secret: str | None = field(default=None, repr=False)
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WebhookSettings:
        """Read the ``NUDGE_*`` webhook variables; blank values count as unset."""
        arns = (environ.get("NUDGE_SES_TOPIC_ARNS") or "").split(",")
        return cls(
            sendgrid_public_key=_optional(environ, "NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY"),
            postmark_user=_optional(environ, "NUDGE_POSTMARK_WEBHOOK_USER"),
            postmark_password=_optional(environ, "NUDGE_POSTMARK_WEBHOOK_PASSWORD"),
            ses_topic_arns=tuple(arn.strip() for arn in arns if arn.strip()),
            resend_secret=_optional(environ, "NUDGE_RESEND_WEBHOOK_SECRET"),
            nudge_secret=_optional(environ, "NUDGE_WEBHOOK_SECRET"),
        )

    def configured(self) -> tuple[str, ...]:
        """The providers whose webhook can be verified with these settings."""
        present = {
            "sendgrid": bool(self.sendgrid_public_key),
            "postmark": bool(self.postmark_user and self.postmark_password),
            "ses": bool(self.ses_topic_arns),
            "resend": bool(self.resend_secret),
            "webhook": bool(self.nudge_secret),
        }
        return tuple(name for name in PROVIDERS if present[name])

    def __repr__(self) -> str:
        return (
            f"WebhookSettings(configured={list(self.configured())!r}, "
            f"ses_topic_arns={list(self.ses_topic_arns)!r}, "
            f"tolerance_seconds={self.tolerance_seconds})"
        )
