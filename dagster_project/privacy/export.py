"""``nudge export`` (GDPR Articles 15 and 20): :func:`export`, one JSON document with
everything nudge holds about a customer (:func:`to_json`, also for ``nudge why --json``).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ..config import Settings
from ..warehouse import one, sql_for
from .people import _records, dbt_schemas
from .reading import _decoded, _Reader, _reading


def export(settings: Settings, customer_id: str) -> dict[str, Any]:
    """Everything nudge holds about one customer (GDPR Articles 15 and 20), JSON-ready with
    :func:`to_json`: the customer row (staging), the consent history with its sources (and the
    landing store's changes not drained yet), every send with its history, what the providers
    reported about them (deliveries, bounces, opens, clicks), the audit rows about
    them, the rows of every dbt table that has them, and whether they or their address were
    erased."""
    with _reading(settings) as con:
        reader = _Reader.read(con, customer_id)
        events: dict[str, list[dict[str, Any]]] = {}
        if reader.has("nudge.send_events"):
            for event in _records(
                con.execute(sql_for(con, "privacy/send_events"), {"customer_id": customer_id})
            ):
                events.setdefault(event.pop("send_id"), []).append(event)
        provider_events: list[dict[str, Any]] = []
        if reader.has("nudge.email_events"):
            email = (reader.customer or {}).get("email")
            emails = [email] if email else []
            provider_events = _records(
                con.execute(
                    sql_for(con, "privacy/email_events"),
                    {"customer_id": customer_id, "emails": emails},
                )
            )
        audit_rows = []
        if reader.has("nudge.audit_log"):
            audit_rows = [
                _decoded(r)
                for r in _records(
                    con.execute(sql_for(con, "privacy/audit_rows"), {"customer_id": customer_id})
                )
            ]
        derived = {}  # the rows the models derived from the shop's data, per dbt table
        for relation in reader.relations.values():
            if relation.is_table and relation.has_customer_id and relation.schema in dbt_schemas():
                row = one(
                    con,
                    sql_for(con, "privacy/count_customer_rows").format(relation=relation.quoted),
                    {"customer_ids": [customer_id]},
                )
                if row and row[0]:
                    derived[relation.label] = int(row[0])
    return {
        "customer_id": customer_id,
        "exported_at": datetime.now(UTC),
        "customer": reader.customer,
        "consent": [{**c, "pending": False} for c in reader.consent]
        + reader.pending_consent(settings.landing_path),
        "sends": [{**s, "events": events.get(s["send_id"], [])} for s in reader.sends],
        # Deliveries, bounces, opens and clicks the providers reported (nudge serve).
        "provider_events": provider_events,
        "audit": audit_rows,
        "derived_tables": derived,
        "erasure": reader.erasure,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def to_json(document: Any) -> str:
    """JSON with ISO-8601 datetimes, for export and why --json."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=_json_default)
