"""``nudge erase`` (GDPR Article 17): :func:`erase`, and what it prints.

Under the warehouse lock it resolves the person (the ids and addresses given, plus the ids with
a given address and the addresses of those ids, in ``raw.customers``, the staging and audience
relations and the ledger), then: pseudonymises what nudge must keep (the ledger, so a step is
never sent twice; the send history, the run log, nudge's own consent changes and the audit
trail: the customer id becomes ``erased:<16 hex>``, the address, the name and the rendering
context go); deletes the person's rows from every dbt table (``staging``, ``intermediate``,
``triggers``, ``audience`` and their ``preview_`` twins; the incremental ones keep rows from tick
to tick, so the second run after the raw delete removes what a tick reloaded); cancels their
deferred and retrying sends; remembers each address as a salted hash (``nudge.erasures``),
which the models turn into a suppression (source ``erasure``) for whoever carries that address
later; and removes their consent changes from the landing store, their emails from the outbox
and their ``nudge render`` output. One audit row records it. DuckDB does not zero the blocks it
frees, so the file is then checked for the person's bytes and compacted
(:func:`dagster_project.warehouse.compact`). nudge never writes the shop's ``raw`` tables: the
operator deletes the person there (the command prints the statements) and runs the erase
again, which compacts away what that delete freed.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import audit, ledger
from ..config import ConfigError, Settings
from ..landing import LandingStore
from ..providers import write_outbox_index_html
from ..providers.outbox import INDEX_JSONL, atomic_write
from ..warehouse import (
    RAW_TABLES,
    Compaction,
    CompactionError,
    Connection,
    compact,
    connection,
    dialect,
    locked_warehouse,
    one,
    quote_relation,
    sql_for,
    sql_literal,
    warehouse_lock,
)
from .people import Person, _changed, _pattern, _relations, _resolve, dbt_schemas, erasure_hash

# Stands for "no customer" in the scrubbing statements: no row has it, replacing it is a no-op.
_NOBODY = "nudge:no-customer"


@dataclass(frozen=True)
class Change:
    """What an erasure did in one place."""

    place: str
    action: str
    count: int


@dataclass
class Erasure:
    """What ``nudge erase`` did."""

    pseudonyms: dict[str, str]  # customer id -> pseudonym
    addresses: int
    changes: list[Change]  # where the person's data was deleted, pseudonymised or scrubbed
    audit_id: str
    # Address hashes added to nudge.erasures (0: none given or known, or already there).
    suppressed: int = 0
    # Rows the shop's raw tables still hold of the person, by table.
    raw_rows: dict[str, int] = field(default_factory=dict)
    sharing_address: int = 0
    compaction: Compaction | None = None
    compaction_reason: str | None = None
    compaction_error: str | None = None
    # What of the person the warehouse files' bytes still show after everything
    # ("address", "first name", "customer id"); empty is the goal.
    traces: list[str] = field(default_factory=list)
    # PostgreSQL: the tables vacuumed after the erasure (None on DuckDB, which compacts).
    vacuumed: list[str] | None = None


def erase(
    settings: Settings,
    *,
    customer_ids: Sequence[str] = (),
    emails: Sequence[str] = (),
    render_dirs: Sequence[Path] = (),
    now: datetime | None = None,
) -> Erasure:
    """Erase a person from everything nudge stores; see the module docstring. Idempotent:
    erasing again, or someone nudge never heard of, changes nothing and succeeds (an address
    given is still suppressed from then on: the person asked not to be mailed)."""
    if not customer_ids and not emails:
        raise ConfigError("erase needs --customer ID and/or --email ADDRESS")
    now = now or datetime.now(UTC)
    audit_id = uuid.uuid4().hex
    if settings.postgres is not None:
        with locked_warehouse(settings) as con:
            result, _, _, in_warehouse = _erase_committed(
                con, settings, customer_ids, emails, render_dirs, now=now, audit_id=audit_id
            )
            result.vacuumed = _vacuum(con, in_warehouse)
        return result
    if not settings.warehouse.exists():
        raise ConfigError(f"no warehouse at {settings.warehouse} (NUDGE_WAREHOUSE)")
    with warehouse_lock(settings.warehouse):
        with connection(settings.warehouse) as con:
            result, person, raw_before, in_warehouse = _erase_committed(
                con, settings, customer_ids, emails, render_dirs, now=now, audit_id=audit_id
            )
            con.execute(sql_for(con, "privacy/checkpoint"))
        rows_changed = sum(c.count for c in in_warehouse)
        _wipe(settings.warehouse, person, result, rows_changed=rows_changed, raw_before=raw_before)
    return result


def _erase_committed(
    con: Connection,
    settings: Settings,
    customer_ids: Sequence[str],
    emails: Sequence[str],
    render_dirs: Sequence[Path],
    *,
    now: datetime,
    audit_id: str,
) -> tuple[Erasure, Person, int, list[Change]]:
    """Everything but the wipe, in one transaction (the caller holds the warehouse lock).
    Returns the result, the person, the raw rows the person had when last erased, and the
    changes made in the warehouse's tables."""
    ledger.ensure_ledger(con)
    # Every change the service acknowledged goes into the warehouse first: erasing the
    # landing store can then lose nothing, whatever happens after.
    _drain_landing(con, settings.landing_path)
    salt = _salt(con)
    person = _resolve(con, salt, customer_ids, emails)
    raw_before = _raw_rows_at_last_erasure(con, person, salt)
    con.begin()
    try:
        changes = _erase_in_warehouse(con, person)
        in_warehouse = list(changes)
        suppressed = _suppress(con, person, salt, audit_id=audit_id, now=now)
        changes += _erase_files(settings, person, render_dirs)
        raw_rows = _raw_rows(con, person)
        audit.record(
            con,
            "erasure",
            actor=audit.cli_actor(),
            subject=person.subject,
            detail={
                "customers": len(person.customer_ids),
                "pseudonyms": sorted(person.pseudonyms.values()),
                "addresses": len(person.addresses),
                "changes": {f"{c.place}: {c.action}": c.count for c in changes},
                "suppressed": suppressed,
                "raw_rows_left": sum(raw_rows.values()),
            },
            occurred_at=now,
            audit_id=audit_id,
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise
    result = Erasure(
        pseudonyms=person.pseudonyms,
        addresses=len(person.addresses),
        changes=[c for c in changes if c.count],
        audit_id=audit_id,
        suppressed=suppressed,
        raw_rows=raw_rows,
        sharing_address=person.sharing_address,
    )
    return result, person, raw_before, in_warehouse


def _vacuum(con: Connection, changes: Sequence[Change]) -> list[str]:
    """PostgreSQL keeps an updated or deleted row's old version until VACUUM marks it free:
    vacuum every table the erasure changed, so the old versions leave what queries, dumps and
    replicas of the live rows can reach. (Their bytes stay in free space until reused, and in
    the WAL and backups: the database's own retention governs those.)"""
    tables = sorted({c.place for c in changes if c.count})
    for table in tables:
        con.execute(sql_for(con, "privacy/vacuum").format(relation=quote_relation(table)))
    return tables


def _wipe(
    warehouse: Path, person: Person, result: Erasure, *, rows_changed: int, raw_before: int
) -> None:
    """Compact the file when old bytes of the person may be in it; then look for them.

    Changed rows always compact: the old values are in freed blocks, possibly compressed where
    a byte search cannot see them. Otherwise the file is compacted if its bytes still show the
    person, or if the raw rows an earlier erasure found are gone now (the shop's delete freed
    them). The caller holds the warehouse lock and has closed its connection.
    """
    traces = _traces(_warehouse_files(warehouse), person)
    if rows_changed:
        result.compaction_reason = f"{rows_changed} rows changed; DuckDB keeps freed blocks' bytes"
    elif traces:
        result.compaction_reason = f"the file still holds the person's {', '.join(traces)}"
    elif raw_before and not sum(result.raw_rows.values()):
        result.compaction_reason = "the person's raw rows were deleted since the last erase"
    if result.compaction_reason:
        try:
            result.compaction = compact(warehouse)
        except CompactionError as exc:  # the erasure is committed; the file is as it was
            result.compaction_error = str(exc)
        traces = _traces(_warehouse_files(warehouse), person)
    result.traces = traces


def _salt(con: Connection) -> str:
    row = one(con, sql_for(con, "privacy/salt"))
    if row is None:
        raise ConfigError("nudge.erasure_salt is empty; run `nudge init`")
    return str(row[0])


def _erase_in_warehouse(con: Connection, person: Person) -> list[Change]:
    """Every deletion and pseudonymisation in the warehouse, in the caller's transaction."""
    everything = _pattern([*person.addresses, *person.names])
    addresses = _pattern(person.addresses)
    run_id = f"erase-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    totals = dict.fromkeys(
        ("cancelled", "ledger", "events", "runs", "consent", "audit"),
        0,
    )
    # Without a customer (an address nudge never had under an id) only quotes of the address
    # are scrubbed.
    for customer_id, pseudo in person.pseudonyms.items() or [(_NOBODY, _NOBODY)]:
        con.execute(
            sql_for(con, "privacy/cancel_open_sends_events"),
            {"customer_id": customer_id, "run_id": run_id},
        )
        totals["cancelled"] += _changed(
            con, sql_for(con, "privacy/cancel_open_sends"), {"customer_id": customer_id}
        )
        one_person = {"customer_id": customer_id, "pseudonym": pseudo}
        totals["ledger"] += _changed(
            con, sql_for(con, "privacy/pseudonymise_ledger"), {**one_person, "pattern": everything}
        )
        scrub = {**one_person, "pattern": everything, "address_pattern": addresses}
        # The history has no key: each engine's own row identity finds the rows to update.
        row_id = "ctid" if dialect(con) == "postgres" else "rowid"
        totals["events"] += _changed(
            con, sql_for(con, "privacy/scrub_send_events").format(row_id=row_id), scrub
        )
        totals["runs"] += _changed(con, sql_for(con, "privacy/scrub_runs"), scrub)
        totals["consent"] += _changed(
            con, sql_for(con, "privacy/pseudonymise_consent_changes"), one_person
        )
        totals["audit"] += _changed(con, sql_for(con, "privacy/pseudonymise_audit_log"), scrub)
    email_events = _changed(
        con,
        sql_for(con, "privacy/scrub_email_events"),
        {
            "emails": person.addresses,
            "send_ids": list(person.sends),
            "address_pattern": addresses,
        },
    )
    changes = [
        Change("nudge.send_ledger", "sends pseudonymised", totals["ledger"]),
        Change("nudge.email_events", "provider events scrubbed", email_events),
        Change("nudge.send_ledger", "deferred or retrying sends cancelled", totals["cancelled"]),
        Change("nudge.send_events", "error texts scrubbed", totals["events"]),
        Change("nudge.runs", "error texts scrubbed", totals["runs"]),
        Change("nudge.consent_changes", "consent changes pseudonymised", totals["consent"]),
        Change("nudge.audit_log", "audit rows pseudonymised or scrubbed", totals["audit"]),
    ]
    if person.customer_ids or person.addresses:
        for relation in _relations(con, dbt_schemas()).values():
            if not (relation.is_table and relation.has_customer_id):
                continue
            if relation.has_email:
                statement = sql_for(con, "privacy/delete_customer_and_email_rows")
                params: dict[str, Any] = {
                    "customer_ids": person.customer_ids,
                    "emails": person.addresses,
                }
            else:
                statement = sql_for(con, "privacy/delete_customer_rows")
                params = {"customer_ids": person.customer_ids}
            deleted = _changed(con, statement.format(relation=relation.quoted), params)
            changes.append(Change(relation.label, "rows deleted", deleted))
    return changes


def _suppress(con: Connection, person: Person, salt: str, *, audit_id: str, now: datetime) -> int:
    """Keep the addresses as salted hashes (nudge.erasures); return how many are new."""
    hashes = sorted({erasure_hash(salt, address) for address in person.addresses})
    return _changed(
        con,
        sql_for(con, "privacy/insert_erasures"),
        {"email_hashes": hashes, "erased_at": now, "audit_id": audit_id},
    )


def _raw_rows(con: Connection, person: Person) -> dict[str, int]:
    """The rows the shop's raw tables still hold of the person."""
    counts: dict[str, int] = {}
    for relation in _relations(con, ["raw"]).values():
        if not relation.has_customer_id:
            continue
        if relation.has_email:
            statement = sql_for(con, "privacy/count_customer_and_email_rows")
            params: dict[str, Any] = {
                "customer_ids": person.customer_ids,
                "emails": person.addresses,
            }
        else:
            statement = sql_for(con, "privacy/count_customer_rows")
            params = {"customer_ids": person.customer_ids}
        row = one(con, statement.format(relation=relation.quoted), params)
        if row and row[0]:
            counts[relation.label] = int(row[0])
    return counts


def _raw_rows_at_last_erasure(con: Connection, person: Person, salt: str) -> int:
    """How many raw rows the person still had when last erased (0: never erased), found by
    their pseudonyms or by the hash of an address given."""
    rows = con.execute(
        sql_for(con, "privacy/erasure_audit"),
        {
            "subjects": list(person.pseudonyms.values()),
            "email_hashes": [erasure_hash(salt, a) for a in person.addresses],
        },
    ).fetchall()
    if not rows:
        return 0
    try:
        detail = json.loads(rows[-1][3] or "{}")
    except json.JSONDecodeError:
        return 0
    return int(detail.get("raw_rows_left") or 0)


# -- files ------------------------------------------------------------------------------------


def _erase_files(settings: Settings, person: Person, render_dirs: Sequence[Path]) -> list[Change]:
    landing = _erase_landing(settings.landing_path, person)
    files, entries = _erase_outbox(settings.outbox_dir, person)
    return [
        Change("landing store", "consent changes and provider events deleted", landing),
        Change("outbox", "files deleted", files),
        Change("outbox", "index entries removed", entries),
        Change("render output", "folders deleted", _erase_renders(render_dirs, person)),
    ]


def _drain_landing(con: Connection, path: Path) -> None:
    # consent and events import privacy.people: import here, not above.
    from ..consent import drain
    from ..events import drain as drain_events

    if not path.exists():
        return
    store = LandingStore(path)
    try:
        drain(con, store)
        drain_events(con, store)
    finally:
        store.close()


def _erase_landing(path: Path, person: Person) -> int:
    if not path.exists() or not (person.customer_ids or person.addresses):
        return 0
    store = LandingStore(path)
    try:
        ids = person.customer_ids or [_NOBODY]
        first, *rest = ids
        # Events go by address and send, once; consent changes by customer.
        erased = store.erase(first, emails=person.addresses, send_ids=list(person.sends))
        return erased + sum(store.erase(customer_id) for customer_id in rest)
    finally:
        store.close()


def _mentions(data: bytes, addresses: Sequence[str]) -> bool:
    lowered = data.lower()
    return any(a.encode("utf-8") in lowered for a in addresses)


def _erase_outbox(outbox: Path, person: Person) -> tuple[int, int]:
    """Delete the person's ``.eml`` and ``.html`` files and index entries; rebuild the page.

    Their files are found by send_id (the ledger's and the index's) and, to be sure, any
    message file that names one of their addresses is deleted too.
    """
    if not outbox.is_dir():
        return 0, 0
    send_ids = set(person.sends)
    customers = set(person.customer_ids)
    index = outbox / INDEX_JSONL
    kept: list[str] = []
    removed = 0
    if index.exists():
        for line in index.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            if isinstance(entry, dict) and (
                entry.get("send_id") in send_ids or entry.get("customer_id") in customers
            ):
                send_ids.add(str(entry.get("send_id")))
                removed += 1
            else:
                kept.append(line)
    deleted = 0
    for folder in (p for p in outbox.iterdir() if p.is_dir()):
        for path in folder.iterdir():
            if path.suffix not in (".eml", ".html") or not path.is_file():
                continue
            if path.stem in send_ids or _mentions(path.read_bytes(), person.addresses):
                path.unlink()
                deleted += 1
    if removed:
        atomic_write(index, "".join(kept).encode("utf-8"))
    if removed or deleted:
        write_outbox_index_html(outbox)
    return deleted, removed


def _erase_renders(render_dirs: Sequence[Path], person: Person) -> int:
    """Delete ``nudge render`` folders of the person: ``<trigger>-<step>-<customer>``, or any
    whose files name one of their addresses."""
    deleted = 0
    for base in render_dirs:
        if not base.is_dir():
            continue
        for folder in (p for p in base.iterdir() if p.is_dir()):
            parts = folder.name.split("-", 2)
            theirs = len(parts) == 3 and parts[2] in person.customer_ids
            if not theirs and person.addresses:
                theirs = any(
                    f.is_file() and _mentions(f.read_bytes(), person.addresses)
                    for f in folder.iterdir()
                )
            if theirs:
                shutil.rmtree(folder)
                deleted += 1
    return deleted


def _warehouse_files(warehouse: Path) -> list[Path]:
    return [warehouse, warehouse.with_name(warehouse.name + ".wal")]


def _traces(paths: Sequence[Path], person: Person) -> list[str]:
    """Which of the person's data these files' bytes still show: addresses (any case), first
    names and customer ids (as stored). Best effort: DuckDB may store a string compressed."""
    needles = {
        "address": ([a.lower().encode("utf-8") for a in person.addresses], True),
        "first name": ([n.encode("utf-8") for n in person.names], False),
        "customer id": ([c.encode("utf-8") for c in person.customer_ids], False),
    }
    longest = max((len(v) for values, _ in needles.values() for v in values), default=0)
    if not longest:
        return []
    found: set[str] = set()
    for path in paths:
        if not path.exists():
            continue
        with open(path, "rb") as handle:
            tail = b""
            while chunk := handle.read(8 << 20):
                window = tail + chunk
                lowered = window.lower()
                for kind, (values, ignore_case) in needles.items():
                    haystack = lowered if ignore_case else window
                    if kind not in found and any(v in haystack for v in values):
                        found.add(kind)
                tail = window[-(longest - 1) :] if longest > 1 else b""
    return [kind for kind in needles if kind in found]


def format_erasure(result: Erasure) -> str:
    """What ``nudge erase`` prints."""
    who = ", ".join(f"{c} -> {p}" for c, p in result.pseudonyms.items()) or "none"
    lines = [f"erasure {result.audit_id}: customer ids {who}; addresses {result.addresses}"]
    if result.changes:
        width = max(len(c.place) for c in result.changes)
        lines += [f"  {c.place:<{width}}  {c.count:>6}  {c.action}" for c in result.changes]
    else:
        lines.append("  nudge holds nothing (more) of this person: 0 changes")
    if result.suppressed:
        lines.append(
            f"  nudge.erasures: {result.suppressed} address hashes added: the address is "
            "suppressed for good, even if imported again"
        )
    elif result.addresses:
        lines.append("  the address was suppressed already (nudge.erasures)")
    if result.sharing_address:
        lines.append(
            f"  {result.sharing_address} other customers have this address: they are suppressed "
            "from now on; erase them with --email if they are this person too"
        )
    if result.compaction:
        c = result.compaction
        lines.append(
            f"  warehouse file compacted ({result.compaction_reason}): "
            f"{c.bytes_before / 1e6:.1f} MB -> {c.bytes_after / 1e6:.1f} MB in {c.seconds:.1f} s"
        )
    if result.compaction_error:
        lines.append(
            f"  COMPACTION FAILED ({result.compaction_error}): the erasure is committed, but "
            "freed blocks may still hold the old bytes; run this command again"
        )
    if result.vacuumed is not None:
        lines.append(
            f"  PostgreSQL: {len(result.vacuumed)} changed tables vacuumed; the old row "
            "versions' bytes stay in free space until reused, and in the WAL and backups "
            "(your database's retention)"
        )
    elif result.traces:
        lines.append(
            f"  the warehouse file still holds the person's {', '.join(result.traces)}: "
            + (
                "the raw tables below still have them"
                if result.raw_rows
                else "another customer's live row has the same value"
            )
        )
    else:
        lines.append("  the warehouse file and its WAL hold no trace of the person (checked)")
    ids = ", ".join(sql_literal(c) for c in result.pseudonyms)
    if result.raw_rows:
        raw = ", ".join(f"{t} {n}" for t, n in sorted(result.raw_rows.items()))
        lines.append(
            f"\nnudge does not own the raw schema, which still has rows of this person ({raw}): "
            "delete them yourself, then run this command again (it wipes what the delete "
            "frees from the file):"
        )
    else:
        lines.append(
            "\nnudge does not own the raw schema; it has no rows of this person now. Should "
            "your loader bring them back, delete them there (their address stays suppressed):"
        )
    if ids:
        lines += [
            f"  delete from raw.{table} where customer_id in ({ids});" for table in RAW_TABLES
        ]
    return "\n".join(lines)
