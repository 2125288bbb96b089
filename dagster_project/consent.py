"""Consent changes nudge records itself: drained from ``nudge serve``'s landing store into
``nudge.consent_changes``, each one audited.

Every tick drains the store first (the ``nudge/consent_changes`` asset, upstream of dbt), so
its models see every change the service acknowledged; the push-time re-check also reads what
landed after that (``guards.recheck_consent``). The drain commits to the warehouse before it
marks the store, and inserts only ids the warehouse lacks: dying between the two costs a
repeat, never a loss or a double.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import polars as pl

from . import audit
from .landing import ConsentChange, LandingStore
from .privacy.people import pseudonym
from .warehouse import Connection, sql_for


@dataclass(frozen=True)
class Drained:
    """What one drain moved."""

    changes: int  # new in the warehouse
    already_there: int  # drained before (a repeat after a crash)


def drain(con: Connection, store: LandingStore, *, now: datetime | None = None) -> Drained:
    """Copy the store's undrained changes into ``nudge.consent_changes`` and the audit log."""
    now = now or datetime.now(UTC)
    total_new = total_seen = 0
    while True:
        changes = store.undrained()
        if not changes:
            break
        erased = _erased(con, {c.customer_id for c in changes})
        # An old link of an erased person still works (they stay unsubscribed), but must not
        # bring their id back: the change is stored under their pseudonym, and the store
        # forgets them again.
        changes = [
            replace(c, customer_id=erased.get(c.customer_id, c.customer_id)) for c in changes
        ]
        new = _insert(con, changes, now)
        store.mark_drained(changes, now)
        for customer_id in erased:
            store.erase(customer_id)
        total_new += new
        total_seen += len(changes) - new
        if len(changes) < 50_000:
            break
    return Drained(total_new, total_seen)


def _erased(con: Connection, customer_ids: set[str]) -> dict[str, str]:
    """Which of these customers were erased (``nudge erase``), with their pseudonyms."""
    rows = con.execute(sql_for(con, "consent/erasure_salt")).fetchall()
    if not rows:
        return {}
    names = {pseudonym(str(rows[0][0]), customer_id): customer_id for customer_id in customer_ids}
    erased = con.execute(
        sql_for(con, "consent/erased_subjects"), {"subjects": list(names)}
    ).fetchall()
    return {names[subject]: subject for (subject,) in erased}


def _insert(con: Connection, changes: list[ConsentChange], now: datetime) -> int:
    frame = pl.DataFrame(
        {
            "change_id": [c.change_id for c in changes],
            "customer_id": [c.customer_id for c in changes],
            "list": [c.list for c in changes],
            "status": [c.status for c in changes],
            "changed_at": [c.changed_at for c in changes],
            "source": [c.source for c in changes],
            "send_id": [c.send_id for c in changes],
        },
        schema_overrides={"changed_at": pl.Datetime("us", "UTC"), "send_id": pl.Utf8},
    )
    con.execute("begin")
    try:
        con.register("landed_changes", frame)
        new = len(
            con.execute(
                sql_for(con, "consent/drain").format(landed="landed_changes"), {"drained_at": now}
            ).fetchall()
        )
        # The audit row of a change shares its id, so a repeated drain adds none twice.
        audit.record_many(
            con,
            [
                (
                    c.change_id,
                    c.changed_at,
                    "consent_change",
                    "service",
                    c.customer_id,
                    {"list": c.list, "status": c.status, "source": c.source, "send_id": c.send_id},
                )
                for c in changes
            ],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.unregister("landed_changes")
    return new
