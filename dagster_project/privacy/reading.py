"""Reading one customer's data, for export and why.

Export and why only read: they take the warehouse lock (no tick writes meanwhile) and open the
file read-only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ..config import ConfigError, Settings
from ..landing import ConsentChange, LandingStore
from ..warehouse import Connection, locked_warehouse, one, quote_relation, sql_for, warehouse_lock
from .people import _records, _Relation, _relations, dbt_schemas, erasure_hash, pseudonym


@contextlib.contextmanager
def _reading(settings: Settings) -> Iterator[Connection]:
    """The warehouse, read-only, while no nudge process writes it."""
    if settings.postgres is not None:
        # PostgreSQL reads what is committed; the lock keeps a tick's half-done push out of
        # the answer, as on DuckDB.
        with locked_warehouse(settings) as con:
            yield con
        return
    if not settings.warehouse.exists():
        raise ConfigError(f"no warehouse at {settings.warehouse} (NUDGE_WAREHOUSE)")
    with warehouse_lock(settings.warehouse):
        con = duckdb.connect(str(settings.warehouse), read_only=True)
        try:
            con.execute("set TimeZone = 'UTC'")
            yield con
        finally:
            con.close()


_JSON_COLUMNS = ("context", "detail", "errors")


def _decoded(record: dict[str, Any]) -> dict[str, Any]:
    """A row with its JSON text columns parsed."""
    for name in _JSON_COLUMNS:
        value = record.get(name)
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                record[name] = json.loads(value)
    return record


@dataclass
class _Reader:
    """One customer's data, read from the warehouse and the landing store."""

    customer_id: str
    relations: dict[str, _Relation]
    customer: dict[str, Any] | None = None
    consent: list[dict[str, Any]] = field(default_factory=list)
    recorded_change_ids: set[str] = field(default_factory=set)
    lists: set[str] = field(default_factory=set)
    sends: list[dict[str, Any]] = field(default_factory=list)
    erasure: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, con: Connection, customer_id: str) -> _Reader:
        reader = cls(customer_id, _relations(con, ["raw", "nudge", *dbt_schemas()]))
        reader._read(con)
        return reader

    def has(self, relation: str) -> bool:
        return relation in self.relations

    def _read(self, con: Connection) -> None:
        params = {"customer_id": self.customer_id}
        if self.has("staging.stg_raw__customers"):
            found = _records(
                con.execute(
                    sql_for(con, "privacy/customer").format(
                        relation=quote_relation("staging.stg_raw__customers")
                    ),
                    params,
                )
            )
            self.customer = found[0] if found else None
        if self.has("intermediate.int_consent__changes"):
            self.consent = _records(
                con.execute(
                    sql_for(con, "privacy/consent_history").format(
                        relation=quote_relation("intermediate.int_consent__changes")
                    ),
                    params,
                )
            )
        else:  # the models were never built: the shop's history and nudge's own
            if self.has("raw.subscriptions"):
                self.consent += _records(
                    con.execute(sql_for(con, "privacy/consent_imported"), params)
                )
            if self.has("nudge.consent_changes"):
                self.consent += [
                    {k: v for k, v in r.items() if k not in ("change_id", "drained_at")}
                    for r in _records(con.execute(sql_for(con, "privacy/consent_recorded"), params))
                ]
            self.consent.sort(key=lambda c: _instant(c["changed_at"]), reverse=True)
        if self.has("nudge.consent_changes"):
            recorded = _records(con.execute(sql_for(con, "privacy/consent_recorded"), params))
            self.recorded_change_ids = {r["change_id"] for r in recorded}
            self.lists |= {
                r[0] for r in con.execute(sql_for(con, "privacy/consent_lists")).fetchall()
            }
        self.lists |= {c["list"] for c in self.consent} | {"marketing", "suppression"}
        if self.has("nudge.send_ledger"):
            self.sends = [
                _decoded(r) for r in _records(con.execute(sql_for(con, "privacy/sends"), params))
            ]
        self.erasure = self._erasure_state(con)

    def _erasure_state(self, con: Connection) -> dict[str, Any]:
        state: dict[str, Any] = {"erased": False, "erased_at": None, "address_erased_at": None}
        if not (self.has("nudge.erasure_salt") and self.has("nudge.audit_log")):
            return state
        row = one(con, sql_for(con, "privacy/salt"))
        if row is None:
            return state
        salt = str(row[0])
        pseudo = pseudonym(salt, self.customer_id)
        kept = {
            r[0]: int(r[1])
            for r in con.execute(
                sql_for(con, "privacy/pseudonym_rows"), {"pseudonym": pseudo}
            ).fetchall()
        }
        erasures = con.execute(
            sql_for(con, "privacy/erasure_audit"), {"subjects": [pseudo], "email_hashes": []}
        ).fetchall()
        if erasures or any(kept.values()):
            state.update(
                erased=True,
                erased_at=erasures[0][1] if erasures else None,
                pseudonym=pseudo,
                kept_under_pseudonym=kept,
            )
        emails = {s.get("email") for s in self.sends} | {(self.customer or {}).get("email")}
        hashes = [erasure_hash(salt, e) for e in emails if e]
        if hashes:
            found = con.execute(
                sql_for(con, "privacy/erasures_of"), {"email_hashes": hashes}
            ).fetchall()
            if found:
                state["address_erased_at"] = found[0][1]
        return state

    def pending_consent(self, landing: Path) -> list[dict[str, Any]]:
        """Consent changes ``nudge serve`` recorded that no tick has drained yet (``pending``:
        the push-time re-check honours them already)."""
        if not landing.exists():
            return []
        store = LandingStore(landing)
        try:
            changes = store.changes_for([self.customer_id], sorted(self.lists))
        finally:
            store.close()
        return [
            _pending(c)
            for c in sorted(changes, key=lambda c: c.changed_at, reverse=True)
            if c.change_id not in self.recorded_change_ids
        ]


def _pending(change: ConsentChange) -> dict[str, Any]:
    return {
        "list": change.list,
        "status": change.status,
        "changed_at": change.changed_at,
        "source": change.source,
        "send_id": change.send_id,
        "change_id": change.change_id,
        "pending": True,
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return _EPOCH
