"""The one small interface every email provider adapter implements.

A provider takes rendered :class:`Message` objects and returns one :class:`SendResult` per
message, in any order, never raising for a per-message problem: a bad address or a provider
rejection is a ``failed`` result with the provider's reason, so one bad customer never stops a
batch. Only a misconfiguration that makes every send impossible (no API key, say) raises
:class:`ProviderConfigError`, before anything is sent.

Exception hierarchy::

    ProviderError                 base of everything a provider raises
    └── ProviderConfigError       the provider cannot run at all (missing key, bad URL)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

# sent: the provider accepted it. failed: it was not delivered (see ``retryable``).
# unknown: the request may have been accepted (e.g. the response timed out) and resending could
# deliver it twice, so it is left for a person to check rather than retried.
SendStatus = Literal["sent", "failed", "unknown"]


class ProviderError(Exception):
    """Base class for provider errors."""


class ProviderConfigError(ProviderError):
    """The provider is misconfigured; nothing can be sent until the configuration is fixed."""


@dataclass(frozen=True)
class Message:
    """One rendered email for one recipient, ready to hand to a provider."""

    send_id: str
    trigger: str
    step: str
    customer_id: str
    to_email: str
    from_email: str
    subject: str
    html: str
    text: str
    # Values the provider echoes back on its events (delivered, opened, bounced), so those
    # events join back to the ledger. Always contains send_id, trigger and step.
    custom_args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """What happened to one message."""

    send_id: str
    status: SendStatus
    provider_message_id: str | None = None
    # The provider's own words for a failure; never contains credentials.
    error: str | None = None
    attempts: int = 1
    # For ``failed`` only: nothing was delivered and the cause is transient (rate limit, 5xx,
    # connection refused), so a later tick may try again within the send's grace window.
    retryable: bool = False


class Provider(Protocol):
    """An ESP adapter. ``name`` is recorded in the ledger next to every send."""

    name: str

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send every message; return exactly one result per message."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
