"""Helpers every provider module shares: headers, JSON, timestamps and building events.

Kept apart from :mod:`.base` so the contract stays readable. Two rules live here because
they must be the same for every provider:

* the dedupe key (:func:`make_event`): the provider's own event id when it has one, else the
  SHA-256 of the event's canonical JSON, so a retried delivery maps to the same ``event_id``;
* timestamps (:func:`check_freshness`): a signed timestamp further than the tolerance from
  ``now``, in either direction, is refused, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from dagster_project.webhooks.base import BOUNCE_TYPES, EVENT_TYPES, EmailEvent, Rejected

Headers = Mapping[str, str]


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names folded to lower case (HTTP header names are case-insensitive)."""
    return {str(name).lower(): str(value) for name, value in headers.items()}


def header(headers: Headers, name: str) -> str | None:
    """The header's value, stripped; None when absent or blank. ``headers`` are lowercased."""
    value = headers.get(name.lower())
    if value is None or not value.strip():
        return None
    return value.strip()


def load_json(body: bytes) -> Any:
    """The parsed body; 400 when it is not JSON (truncated, not UTF-8, empty)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "the body is not valid JSON") from None
    except RecursionError:  # nested deeper than the parser goes: no provider sends that
        raise Rejected(400, "the body is nested too deeply") from None


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def content_hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


# An event time outside these years is a bug upstream (Go's and .NET's zero time is year 1),
# not an event: it is ignored, never stored (the store and the models need real instants).
EARLIEST_YEAR = 2000
LATEST_YEAR = 2200


def _plausible(instant: datetime | None) -> datetime | None:
    if instant is None or not EARLIEST_YEAR <= instant.year <= LATEST_YEAR:
        return None
    return instant


def parse_unix_seconds(value: Any) -> datetime | None:
    """A Unix timestamp (int, float or numeric string) as aware UTC; None if unusable."""
    return _plausible(_unix_seconds(value))


def _unix_seconds(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_iso(value: Any, *, naive_is_utc: bool = True) -> datetime | None:
    """An ISO-8601 timestamp as aware UTC; None if unusable.

    Providers document UTC or an explicit offset; a value without one is read as UTC when
    ``naive_is_utc`` (the providers) and refused otherwise (nudge's own format requires it).
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if not naive_is_utc:
            return None
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return _plausible(parsed.astimezone(UTC))
    except OverflowError:  # year 1 with a positive offset is before year 1 in UTC
        return None


def check_freshness(
    timestamp: str, now: float, tolerance: float, *, what: str = "the signature timestamp"
) -> None:
    """403 unless ``timestamp`` (Unix seconds) is within ``tolerance`` of ``now``."""
    try:
        value = int(timestamp.strip())
    except ValueError:
        raise Rejected(403, f"{what} is not a Unix timestamp") from None
    if abs(now - value) > tolerance:
        raise Rejected(403, f"{what} is outside the {int(tolerance)} s tolerance (stale or future)")


def as_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (for optional nested objects)."""
    return value if isinstance(value, dict) else {}


def valid_text(value: str) -> str:
    """``value`` as text SQLite can store: a lone surrogate (JSON allows ``"\\ud800"``) is not
    UTF-8 and would fail the whole group commit it rides in, other requests' included."""
    return value.encode("utf-8", "replace").decode("utf-8")


def clean_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return valid_text(value.strip().lower()) or None


def clean_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return valid_text(value.strip()) or None


def make_event(
    provider: str,
    raw: Any,
    *,
    event_type: str,
    occurred_at: datetime,
    provider_event_id: str | None = None,
    send_id: str | None = None,
    email: str | None = None,
    bounce_type: str | None = None,
    is_machine_open: bool = False,
    url: str | None = None,
) -> EmailEvent:
    """Build an :class:`EmailEvent`, enforcing the invariants of the contract.

    Fields that belong to other event types are dropped (a bounce type only on ``bounced``,
    a machine-open flag only on ``opened``, a URL only on ``clicked``).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    if event_type == "bounced":
        bounce_type = bounce_type if bounce_type in BOUNCE_TYPES else "undetermined"
    else:
        bounce_type = None
    if provider_event_id:
        provider_event_id = valid_text(provider_event_id)
        event_id = f"{provider}:{provider_event_id}"
    else:
        provider_event_id = None
        event_id = f"{provider}:sha256:{content_hash(raw)}"
    return EmailEvent(
        event_id=event_id,
        provider=provider,
        provider_event_id=provider_event_id,
        send_id=clean_text(send_id),
        email=clean_email(email),
        event_type=event_type,
        bounce_type=bounce_type,
        is_machine_open=is_machine_open if event_type == "opened" else False,
        url=clean_text(url) if event_type == "clicked" else None,
        occurred_at=occurred_at.astimezone(UTC),
        payload=compact_json(raw),
    )


def not_configured(provider: str, *variables: str) -> Rejected:
    return Rejected(503, f"the {provider} webhook is not configured: set {' and '.join(variables)}")
