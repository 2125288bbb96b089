"""Time as a parameter: every tick works at an instant ``as_of``, never the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_as_of(value: str) -> datetime:
    """Parse an ISO-8601 instant; a value without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"as_of must be an ISO-8601 instant, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def this_hour() -> datetime:
    """The start of the current hour, UTC: a tick's natural instant."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
