"""What erase, export and why share: who a person is, and the warehouse's relations.

Pseudonyms and hashes use the warehouse's own salt (``nudge.erasure_salt``): a pseudonym is
``erased:`` + the first 16 hex digits of SHA-256(salt || customer_id), an erased address is
kept as the hex SHA-256(salt || address), the same as the dbt macro ``erasure_hash``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import STATE_DIR
from ..preview import PREVIEW_PREFIX
from ..warehouse import Connection, one, quote_relation, sql_for

PSEUDONYM_PREFIX = "erased:"
# The schemas dbt builds (and their preview_ twins): nudge's to delete rows from.
DBT_SCHEMAS = ("staging", "intermediate", "triggers", "audience", "reporting")
# A regular expression that matches nothing (RE2 has no lookarounds): nothing to scrub.
_NOTHING = r"[^\s\S]"
# Names this short are no name: scrubbing them would eat letters out of words.
_MIN_NAME_CHARS = 2
# nudge render's default output folder (cli.py): `<trigger>-<step>-<customer>/`.
RENDER_DIR = Path(".nudge") / "render"


def erasure_hash(salt: str, email: str) -> str:
    """The hex SHA-256 of ``salt || email`` kept in ``nudge.erasures`` (the dbt macro
    ``erasure_hash``: DuckDB's ``sha256(salt || email)``). ``email`` is normalised."""
    return hashlib.sha256((salt + email).encode("utf-8")).hexdigest()


def pseudonym(salt: str, customer_id: str) -> str:
    """What an erased customer id becomes: ``erased:`` + 16 hex digits, stable per warehouse."""
    digest = hashlib.sha256((salt + customer_id).encode("utf-8")).hexdigest()
    return PSEUDONYM_PREFIX + digest[:16]


def dbt_schemas() -> list[str]:
    """The schemas dbt builds into, live and preview."""
    return [prefix + schema for prefix in ("", PREVIEW_PREFIX) for schema in DBT_SCHEMAS]


def default_render_dirs() -> list[Path]:
    """Where ``nudge render`` writes by default: ``.nudge/render`` of the working directory,
    and of the project (the same folder when run from the project, as make does)."""
    dirs: list[Path] = []
    for base in (Path.cwd() / RENDER_DIR, STATE_DIR / "render"):
        if base.resolve() not in dirs:
            dirs.append(base.resolve())
    return dirs


# -- the warehouse's relations ----------------------------------------------------------------


@dataclass(frozen=True)
class _Relation:
    schema: str
    name: str
    is_table: bool
    has_customer_id: bool
    has_email: bool
    has_first_name: bool

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def quoted(self) -> str:
        return quote_relation(self.label)


def _relations(con: Connection, schemas: Sequence[str]) -> dict[str, _Relation]:
    rows = con.execute(sql_for(con, "privacy/relations"), {"schemas": list(schemas)}).fetchall()
    found = [_Relation(*row) for row in rows]
    return {r.label: r for r in found}


def _changed(con: Connection, statement: str, params: Mapping[str, Any]) -> int:
    """Run an insert, update or delete; return how many rows it changed."""
    row = one(con, statement, dict(params))
    return int(row[0]) if row else 0


def _records(cursor: Any) -> list[dict[str, Any]]:
    """The rows of the last statement on ``cursor`` (``con.execute(...)``'s result) as dicts."""
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# -- who the person is ------------------------------------------------------------------------


@dataclass
class Person:
    """Everything an erasure goes by: the customer ids and their pseudonyms, the normalised
    addresses, the first names, and the ledger's sends of them (send_id -> trigger)."""

    customer_ids: list[str]
    pseudonyms: dict[str, str]
    addresses: list[str]
    names: list[str]
    sends: dict[str, str]
    # Customers not erased who share one of the addresses (suppressed from now on).
    sharing_address: int = 0

    @property
    def subject(self) -> str | None:
        """The audit subject: the (first) pseudonym."""
        return next(iter(self.pseudonyms.values()), None)


@dataclass(frozen=True)
class _Seen:
    customer_id: str
    email: str | None
    first_name: str | None
    send_id: str | None = None
    trigger: str | None = None


def _normalised(con: Connection, emails: Iterable[str | None]) -> list[str]:
    values = [e for e in emails if e]
    if not values:
        return []
    rows = con.execute(sql_for(con, "privacy/normalise_emails"), {"emails": values}).fetchall()
    return [row[0] for row in rows]


def _seen(
    con: Connection,
    sources: Sequence[_Relation],
    customer_ids: Sequence[str],
    emails: Sequence[str],
) -> list[_Seen]:
    """The rows of these ids or addresses in every source and in the ledger."""
    if not customer_ids and not emails:
        return []
    params = {"customer_ids": list(customer_ids), "emails": list(emails)}
    seen: list[_Seen] = []
    for relation in sources:
        columns = ", ".join(
            name
            for name, present in (
                ("customer_id", True),
                ("email", relation.has_email),
                ("first_name", relation.has_first_name),
            )
            if present
        )
        cursor = con.execute(
            sql_for(con, "privacy/person_rows").format(relation=relation.quoted, columns=columns),
            params,
        )
        seen += [
            _Seen(str(r["customer_id"]), r.get("email"), r.get("first_name"))
            for r in _records(cursor)
            if r["customer_id"] is not None  # raw's bad rows: no customer to erase
        ]
    for customer_id, email, first_name, send_id, trigger in con.execute(
        sql_for(con, "privacy/ledger_people"), params
    ).fetchall():
        seen.append(_Seen(customer_id, email, first_name, send_id, trigger))
    return seen


def _resolve(
    con: Connection, salt: str, customer_ids: Sequence[str], emails: Sequence[str]
) -> Person:
    """The ids given plus those with a given address; the addresses given plus those of the ids.

    One step each way, not a closure: two customers who share an address (two accounts, or a
    placeholder address) are one person only when the operator names the address.
    """
    relations = _relations(con, ["raw", *dbt_schemas()])
    sources = [r for r in relations.values() if r.has_customer_id and r.has_email]
    given_ids = sorted({c.strip() for c in customer_ids if c and c.strip()})
    given_emails = _normalised(con, emails)
    ids = sorted(set(given_ids) | {s.customer_id for s in _seen(con, sources, [], given_emails)})
    pseudonyms = {c: pseudonym(salt, c) for c in ids}
    # Pseudonyms too: a repeated erasure still finds the sends (and their outbox files).
    theirs = _seen(con, sources, [*ids, *pseudonyms.values()], [])
    addresses = sorted(set(given_emails) | set(_normalised(con, (s.email for s in theirs))))
    names = sorted(
        {
            s.first_name.strip()
            for s in theirs
            if s.first_name and len(s.first_name.strip()) >= _MIN_NAME_CHARS
        }
    )
    others = {s.customer_id for s in _seen(con, sources, [], addresses)}
    return Person(
        customer_ids=ids,
        pseudonyms=pseudonyms,
        addresses=addresses,
        names=names,
        sends={s.send_id: s.trigger or "" for s in theirs if s.send_id},
        sharing_address=len(others - set(ids) - set(pseudonyms.values())),
    )


def _pattern(needles: Iterable[str]) -> str:
    """One case-insensitive regular expression matching any of ``needles``, as text or as JSON
    escapes them (the audit detail and the run log are JSON), longest first: an address is
    replaced whole before the name inside it."""
    forms = set()
    for needle in needles:
        forms.add(needle)
        forms.add(json.dumps(needle)[1:-1])
    ordered = sorted(forms, key=lambda f: (-len(f), f))
    return "|".join(re.escape(f) for f in ordered) or _NOTHING
