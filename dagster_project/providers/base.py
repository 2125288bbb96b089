"""The one small interface every email provider adapter implements.

A provider takes rendered :class:`Message` objects and returns one :class:`SendResult` per
message, in any order, never raising for a per-message problem: a bad address or a provider
rejection is a ``failed`` result with the provider's reason, so one bad customer never stops a
batch. Only a misconfiguration that makes every send impossible (no API key, say) raises
:class:`ProviderConfigError`, before anything is sent.

Every request an adapter makes is reported to the push's :class:`Journal` twice: just before
it goes out (``handing_over``, which returns once that is durable) and when its answer is read
(``answered``). That is how a crash leaves in doubt only what really was on the wire (see
``dagster_project/handover.py``). An adapter that makes no requests (the outbox) ignores it.

Exception hierarchy::

    ProviderError                 base of everything a provider raises
    ├── ProviderConfigError       the provider cannot run at all (missing key, bad URL)
    └── HandoverError             a request could not be journaled, so it was not sent
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

# sent: the provider accepted it. failed: it was not delivered (see ``retryable``).
# unknown: the request may have been accepted (e.g. the response timed out) and resending could
# deliver it twice, so it is left for a person to check rather than retried.
SendStatus = Literal["sent", "failed", "unknown"]


class ProviderError(Exception):
    """Base class for provider errors."""


class ProviderConfigError(ProviderError):
    """The provider is misconfigured; nothing can be sent until the configuration is fixed."""


class HandoverError(ProviderError):
    """A request's hand-over could not be recorded; the request must not go out."""


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
    # Extra RFC 5322 headers every provider must put on the message as they are, e.g. RFC 2369 /
    # RFC 8058 ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` on marketing mail. Values are
    # one line (dispatch builds them; never from customer data); what an adapter refuses to send
    # is :func:`checked_headers`'s to decide.
    headers: dict[str, str] = field(default_factory=dict)
    # The tick that sends it (the outbox's Date header) and when its step fell due.
    as_of: datetime | None = None
    due_at: datetime | None = None

    def size(self) -> int:
        """Bytes of the rendered bodies (UTF-8), what mail clients count before clipping."""
        return len(self.html.encode("utf-8")) + len(self.text.encode("utf-8"))


# -- a message's extra headers ----------------------------------------------------------------

# RFC 5322 section 2.2: a field name is printable US-ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# A field body: printable US-ASCII, space and tab.
_FIELD_BODY = re.compile(r"[ -~\t]*")

# Set by the adapters themselves, or refused as a custom header by a provider (SendGrid's
# documented list: x-sg-id, x-sg-eid, received, dkim-signature, Content-Type,
# Content-Transfer-Encoding, To, From, Subject, Reply-To, CC, BCC). Lower-cased.
RESERVED_HEADERS = frozenset(
    {
        "bcc",
        "cc",
        "content-transfer-encoding",
        "content-type",
        "date",
        "dkim-signature",
        "from",
        "message-id",
        "mime-version",
        "received",
        "reply-to",
        "return-path",
        "sender",
        "subject",
        "to",
        "x-sg-eid",
        "x-sg-id",
    }
)
_RESERVED_PREFIX = "x-nudge-"  # X-Nudge-Send-Id, -Trigger, -Step: nudge's own


def checked_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """A message's extra headers (:attr:`Message.headers`) as ``(name, value)`` pairs in the
    given order, unchanged: the one gate every adapter passes them through.

    Raises ``ValueError`` naming the first header that cannot be sent, which the adapters turn
    into a permanent failure of that message alone (the rest of the batch goes on):

    * a value with a line break (CR or LF): header injection (``"<x>\\r\\nBcc: ..."``);
    * a value with other control characters or non-ASCII text: RFC 5322 header values are
      US-ASCII, SES refuses anything else and SendGrid wants it RFC 2047-encoded beforehand, so
      a message behaves the same whichever provider sends it;
    * an empty value (SES refuses it; an empty ``List-Unsubscribe`` is a bug upstream);
    * a name that is not an RFC 5322 field name (printable ASCII but ``:``), or one given twice
      (in any case);
    * a name the adapters set themselves (``From``, ``Subject``, ``Message-ID``,
      ``X-Nudge-*``...) or that a provider refuses as a custom header (SendGrid: ``Reply-To``,
      ``CC``, ``DKIM-Signature``...): the email would carry two, or be rejected.

    Errors name the header, never its value (a ``List-Unsubscribe`` holds a per-recipient
    token).
    """
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str):
            raise ValueError(_not_a_field_name(name))
        key = _field_key(name)
        if not isinstance(value, str):
            raise ValueError(f"header {name} has a {type(value).__name__} value, not a string")
        # The common case first: printable ASCII and space (str methods, no regex). Anything
        # else is judged by the rules below, which name the problem.
        if not (value.isascii() and value.isprintable()):
            _check_unusual_value(name, value)
        if not value.strip():
            raise ValueError(f"header {name} has an empty value")
        if key in RESERVED_HEADERS or key.startswith(_RESERVED_PREFIX):
            raise ValueError(f"header {name} is set by nudge or the provider; it cannot be added")
        if key in seen:
            raise ValueError(f"header {name} is given twice")
        seen.add(key)
        pairs.append((name, value))
    return pairs


@functools.lru_cache(maxsize=256)
def _field_key(name: str) -> str:
    """A header name's lower-cased key, or ``ValueError`` if it is not a field name. Cached:
    every message of a push carries the same few names, and a push checks thousands."""
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(_not_a_field_name(name))
    return name.lower()


def _not_a_field_name(name: object) -> str:
    return (
        f"header name {name!r} is not an RFC 5322 field name "
        "(printable ASCII without ':' or spaces)"
    )


def _check_unusual_value(name: str, value: str) -> None:
    """``ValueError`` for a value that is not printable ASCII and space (a tab is fine)."""
    if "\r" in value or "\n" in value:
        raise ValueError(
            f"header {name} has a line break (CR or LF) in its value: refused as header injection"
        )
    if not _FIELD_BODY.fullmatch(value):
        raise ValueError(
            f"header {name} has control characters or non-ASCII text in its value "
            "(RFC 5322 header values are printable US-ASCII; encode others per RFC 2047)"
        )


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
    # A short code the ledger records as the reason, when nudge decided it before any request
    # (``message_too_large``); otherwise the ledger derives it from the status.
    reason: str | None = None


@dataclass(frozen=True)
class ProviderLimits:
    """What an adapter declares about itself; dispatch and the ledger act on it.

    ``max_batch``: messages per ``send()`` call the adapter accepts (dispatch never hands it
    more); one call may still make several requests. ``max_request_bytes``: the provider's
    payload limit per request, which the adapter respects by splitting. ``idempotent``: the
    provider honours an idempotency key, so a batch whose answer was lost (a crash, a read
    timeout) can be sent again *with the same key* without delivering twice; for the others such
    sends become ``unknown``. ``requests_per_second``: the default rate limit shared by all of
    the run's workers (``None``: unlimited). ``per_message_results``: one request reports each
    message's own outcome (Postmark's batch does; an all-or-nothing batch does not, and is split
    to isolate a rejected row). ``default_batch``: the messages dispatch hands over per call when
    the operator did not set ``batch_size``; a batch adapter makes it one round of its workers'
    requests (a full request each), so one consent re-check and one settle cover them all.
    """

    max_batch: int = 100
    max_request_bytes: int | None = None
    idempotent: bool = False
    requests_per_second: float | None = None
    per_message_results: bool = True
    default_batch: int = 100


class Journal(Protocol):
    """Where an adapter reports each request of a push (``dagster_project/handover.py``)."""

    def handing_over(self, send_ids: Sequence[str], request_key: str | None) -> None:
        """The request carrying ``send_ids`` goes out next; returns once that is durable.

        Raises :class:`HandoverError` when it could not be recorded: then the request must not
        go out, and its messages fail retryable (nothing was sent).
        """
        ...

    def answered(self, results: Sequence[SendResult]) -> None:
        """The request's answer, one result per message it carried."""
        ...

    def returned(self, send_ids: Sequence[str]) -> None:
        """The provider refused the request whole, taking none of it (an all-or-nothing batch
        about to be split to find its bad rows): these sends are off the wire again."""
        ...


class Provider(Protocol):
    """An ESP adapter. ``name`` is recorded in the ledger next to every send."""

    name: str
    limits: ProviderLimits

    def send(
        self,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        journal: Journal | None = None,
    ) -> list[SendResult]:
        """Send every message; return exactly one result per message.

        ``idempotency_key`` identifies this exact batch (dispatch derives it from the batch's
        send_ids): an idempotent adapter sends it as the provider's idempotency key (per
        request, suffixed if it splits the batch), so resending a request after a crash cannot
        deliver twice. Others may ignore it. ``journal``: told of every request (see above).
        """
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
