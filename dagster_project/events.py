"""Provider events (deliveries, bounces, complaints, opens, clicks, unsubscribes): drained from
``nudge serve``'s landing store into ``nudge.email_events``.

The webhooks (``webhooks/``) verify and normalise what each provider reports; the service
stores it in the landing store and answers; every tick drains the store here before dbt builds,
so the models that suppress, steer sequences and count deliverability see every event the
service acknowledged. As with consent changes, the warehouse commits before the store is
marked, and an event the warehouse has is not written again: dying between the two costs a
repeat, never a loss or a double.

An event about an erased address (``nudge erase`` ran, then the provider reported a late open)
is kept without the address or payload: it still counts for deliverability, and the erasure
already suppresses the address by its hash; the store forgets it in the transaction that marks
the batch drained.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import polars as pl

from .landing import LandedEvent, LandingStore
from .privacy.people import erasure_hash
from .warehouse import Connection, one, sql_for


@dataclass(frozen=True)
class DrainedEvents:
    """What one drain moved."""

    events: int  # new in the warehouse
    already_there: int  # drained before (a repeat after a crash, a provider's redelivery)
    unmatched: int  # events whose send_id is not in the ledger (kept, not dropped)
    by_type: dict[str, int]


def drain(con: Connection, store: LandingStore, *, now: datetime | None = None) -> DrainedEvents:
    """Copy the store's undrained events into ``nudge.email_events``."""
    now = now or datetime.now(UTC)
    total_new = total_seen = unmatched = 0
    by_type: dict[str, int] = {}
    while True:
        landed = store.undrained_events()
        if not landed:
            break
        erased = _erased_emails(con, {e.event.email for e in landed if e.event.email})
        landed = [_scrubbed(e) if e.event.email in erased else e for e in landed]
        new, new_unmatched = _insert(con, landed, now)
        store.mark_events_drained(
            [e.event.event_id for e in landed], now, forget_emails=sorted(erased)
        )
        for e in landed:
            by_type[e.event.event_type] = by_type.get(e.event.event_type, 0) + 1
        total_new += new
        total_seen += len(landed) - new
        unmatched += new_unmatched
        if len(landed) < 50_000:
            break
    return DrainedEvents(total_new, total_seen, unmatched, by_type)


def _erased_emails(con: Connection, emails: set[str]) -> set[str]:
    rows = con.execute(sql_for(con, "consent/erasure_salt")).fetchall()
    if not rows or not emails:
        return set()
    hashes = {erasure_hash(str(rows[0][0]), email): email for email in emails}
    found = con.execute(
        sql_for(con, "events/erased_emails"), {"email_hashes": list(hashes)}
    ).fetchall()
    return {hashes[h] for (h,) in found}


def _scrubbed(landed: LandedEvent) -> LandedEvent:
    return replace(landed, event=replace(landed.event, email=None, payload=None, url=None))


def _insert(con: Connection, landed: list[LandedEvent], now: datetime) -> tuple[int, int]:
    events = [e.event for e in landed]
    frame = pl.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "provider": [e.provider for e in events],
            "provider_event_id": [e.provider_event_id for e in events],
            "send_id": [e.send_id for e in events],
            "email": [e.email for e in events],
            "event_type": [e.event_type for e in events],
            "bounce_type": [e.bounce_type for e in events],
            "is_machine_open": [e.is_machine_open for e in events],
            "url": [e.url for e in events],
            "occurred_at": [e.occurred_at for e in events],
            "received_at": [e.received_at for e in landed],
            "payload": [e.payload for e in events],
        },
        schema_overrides={
            "provider_event_id": pl.Utf8,
            "send_id": pl.Utf8,
            "email": pl.Utf8,
            "bounce_type": pl.Utf8,
            "url": pl.Utf8,
            "payload": pl.Utf8,
            "occurred_at": pl.Datetime("us", "UTC"),
            "received_at": pl.Datetime("us", "UTC"),
        },
    )
    con.execute("begin")
    try:
        con.register("landed_events", frame)
        new = len(
            con.execute(
                sql_for(con, "events/drain").format(landed="landed_events"), {"drained_at": now}
            ).fetchall()
        )
        row = one(con, sql_for(con, "events/unmatched").format(landed="landed_events"))
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.unregister("landed_events")
    return new, int(row[0]) if row else 0
