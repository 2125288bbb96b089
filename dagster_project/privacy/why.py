"""``nudge why``: :func:`why`, for every trigger and step around the last tick, what the ledger
says (sent, deferred by the frequency cap, ...) or why the rules kept it out, with the consent
change that did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ..config import ConfigError, Settings
from ..masking import mask_email
from ..warehouse import quote_relation, sql_for
from .people import _records
from .reading import _instant, _Reader, _reading


@dataclass(frozen=True)
class _Trigger:
    name: str
    relation: str
    consent_list: str = "marketing"
    suppression_list: str = "suppression"


def _manifest_triggers() -> list[_Trigger] | None:
    """The project's triggers from the dbt manifest, or None when it cannot be read."""
    from ..triggers import project_triggers

    try:
        triggers, _ = project_triggers()
    except (RuntimeError, ValueError, OSError):
        return None
    return [_Trigger(t.name, t.relation, t.consent_list, t.suppression_list) for t in triggers]


# Exclusion reasons a consent change decides: on the trigger's consent list, on the
# suppression list; and the ledger's skip reasons of the push-time re-check.
_CONSENT_REASONS = frozenset({"unsubscribed", "unconfirmed", "no_consent"})
_SUPPRESSION_REASONS = frozenset({"suppressed"})
_SKIP_REASONS = {"unsubscribed_before_send": "consent", "suppressed_before_send": "suppression"}


@dataclass
class WhyEntry:
    """One step of one entry: what happened to it, or why not."""

    trigger: str
    step: str
    step_index: int | None
    trigger_key: str | None
    send_id: str
    summary: str
    when: datetime | None = None
    status: str | None = None  # the ledger's, when it has the send
    reason: str | None = None
    error: str | None = None
    provider: str | None = None
    sent_as_of: datetime | None = None
    settled_at: datetime | None = None
    next_attempt_at: datetime | None = None
    due_at: datetime | None = None
    expires_at: datetime | None = None
    exclusion_reason: str | None = None  # the eligibility table's, when it has the step
    consent_status: str | None = None
    consent_source: str | None = None
    suppression_reason: str | None = None
    consent_change: dict[str, Any] | None = None


@dataclass
class Why:
    """``nudge why`` for one customer."""

    customer_id: str
    known: bool
    email: str | None
    eligibility_as_of: datetime | None
    consent: list[dict[str, Any]]
    pending_consent: list[dict[str, Any]]
    erasure: dict[str, Any]
    entries: list[WhyEntry]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def why(settings: Settings, customer_id: str, *, trigger: str | None = None) -> Why:
    """Why a customer did or did not get each step of each trigger around the last tick."""
    triggers = _manifest_triggers()
    with _reading(settings) as con:
        reader = _Reader.read(con, customer_id)
        if triggers is None:  # no manifest: the eligibility tables the warehouse has
            triggers = [
                _Trigger(r.name.removesuffix("_eligibility"), r.label)
                for r in reader.relations.values()
                if r.schema == "audience" and r.name.endswith("_eligibility")
            ]
        if trigger is not None:
            triggers = [t for t in triggers if t.name == trigger]
            if not triggers:
                raise ConfigError(f"no trigger {trigger!r} (see models/triggers/)")
        rows: dict[str, tuple[_Trigger, dict[str, Any]]] = {}
        for spec in triggers:
            if spec.relation not in reader.relations:
                continue
            for row in _records(
                con.execute(
                    sql_for(con, "privacy/eligibility_rows").format(
                        relation=quote_relation(spec.relation)
                    ),
                    {"customer_id": customer_id},
                )
            ):
                rows[row["send_id"]] = (spec, row)
    as_of = max((r["as_of"] for _, r in rows.values() if r.get("as_of")), default=None)
    by_name = {t.name: t for t in triggers}
    entries = []
    for send in reader.sends:
        if trigger is not None and send["trigger"] != trigger:
            continue
        found = rows.pop(send["send_id"], None)
        entries.append(
            _ledger_entry(
                send,
                found[1] if found else None,
                found[0] if found else by_name.get(send["trigger"]),
                reader.consent,
            )
        )
    entries += [_eligibility_entry(row, spec, reader.consent) for spec, row in rows.values()]
    entries.sort(key=lambda e: (_instant(e.when), e.trigger, e.step_index or 0), reverse=True)
    return Why(
        customer_id=customer_id,
        known=reader.customer is not None,
        email=mask_email((reader.customer or {}).get("email")) or None,
        eligibility_as_of=as_of,
        consent=_latest_per_list(reader.consent),
        pending_consent=reader.pending_consent(settings.landing_path),
        erasure=reader.erasure,
        entries=entries,
    )


def _latest_per_list(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each list's deciding change now (int_subscriptions__latest's order)."""
    lists = sorted({c["list"] for c in history})
    found = [_deciding(history, name, None) for name in lists]
    return [c for c in found if c is not None]


def _deciding(
    history: Sequence[dict[str, Any]], list_name: str, as_of: datetime | None
) -> dict[str, Any] | None:
    """The change that decides a list's status at ``as_of``: an erasure first, then the latest,
    an unsubscribe on a tie (the models' order)."""
    candidates = [
        c
        for c in history
        if c["list"] == list_name and (as_of is None or _instant(c["changed_at"]) <= as_of)
    ]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda c: (
            c.get("source") != "erasure",
            -_instant(c["changed_at"]).timestamp(),
            c.get("status") != "unsubscribed",
        ),
    )


def _when(value: Any) -> str:
    if not isinstance(value, datetime):
        return "?"
    return f"{_instant(value).astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _change_text(change: dict[str, Any] | None) -> str:
    """``: marketing unsubscribed on ... (source one_click, from email <send_id>)``."""
    if change is None:
        return ""
    via = f", from email {change['send_id']}" if change.get("send_id") else ""
    return (
        f": {change['list']} {change['status']} on {_when(change['changed_at'])} "
        f"(source {change.get('source') or '?'}{via})"
    )


def _ledger_entry(
    send: dict[str, Any],
    row: dict[str, Any] | None,
    spec: _Trigger | None,
    history: Sequence[dict[str, Any]],
) -> WhyEntry:
    status, reason = send.get("status"), send.get("reason")
    entry = WhyEntry(
        trigger=send["trigger"],
        step=send["step"],
        step_index=send.get("step_index"),
        trigger_key=send.get("trigger_key"),
        send_id=send["send_id"],
        summary="",
        # The tick that sent it, or that last decided it: the simulation's time in a replay.
        when=send.get("sent_as_of") or send.get("as_of") or send.get("planned_at"),
        status=status,
        reason=reason,
        error=send.get("error"),
        provider=send.get("provider"),
        sent_as_of=send.get("sent_as_of"),
        settled_at=send.get("settled_at"),
        next_attempt_at=send.get("next_attempt_at"),
        due_at=send.get("due_at"),
        expires_at=send.get("expires_at"),
    )
    if row is not None:
        _copy_rule_columns(entry, row)
    if reason in _SKIP_REASONS and spec is not None:
        list_name = (
            spec.consent_list if _SKIP_REASONS[reason] == "consent" else spec.suppression_list
        )
        entry.consent_change = _deciding(history, list_name, _instant(entry.settled_at))
    entry.summary = _ledger_summary(entry) + _change_text(entry.consent_change)
    return entry


def _ledger_summary(e: WhyEntry) -> str:
    detail = f" ({e.error})" if e.error else ""
    match e.status:
        case "sent":
            return (
                f"SENT by the tick of {_when(e.sent_as_of)} via {e.provider or '?'}"
                f" (settled {_when(e.settled_at)})"
            )
        case "deferred":
            return (
                f"DEFERRED: {e.reason or 'frequency cap'}: the customer's frequency cap was full; "
                f"a later tick sends it once the cap allows, until {_when(e.expires_at)}"
            )
        case "planned" | "sending":
            return f"IN FLIGHT ({e.status}): a run is sending it, or a dead run's recovery will"
        case "failed_retryable":
            return f"RETRYING: {e.reason}{detail}; next attempt after {_when(e.next_attempt_at)}"
        case "failed_permanent":
            return f"FAILED: {e.reason}{detail}"
        case "unknown":
            return f"DELIVERY UNKNOWN: {e.reason}{detail}; see `nudge resolve-unknown`"
        case "expired":
            return f"EXPIRED: {e.reason}: its grace window ended before it could go out"
        case "holdout":
            return f"HELD OUT: {e.reason} (never sent, to measure lift)"
        case "skipped":
            return f"SKIPPED: {e.reason}{detail}"
        case _:
            return f"{(e.status or '?').upper()}: {e.reason or ''}{detail}"


def _copy_rule_columns(entry: WhyEntry, row: dict[str, Any]) -> None:
    entry.exclusion_reason = row.get("exclusion_reason")
    entry.consent_status = row.get("consent_status")
    entry.consent_source = row.get("consent_source")
    entry.suppression_reason = row.get("suppression_reason")
    entry.due_at = entry.due_at or row.get("due_at")
    entry.expires_at = entry.expires_at or row.get("expires_at")


def _eligibility_entry(
    row: dict[str, Any], spec: _Trigger, history: Sequence[dict[str, Any]]
) -> WhyEntry:
    entry = WhyEntry(
        trigger=spec.name,
        step=row["step"],
        step_index=row.get("step_index"),
        trigger_key=row.get("trigger_key"),
        send_id=row["send_id"],
        summary="",
        when=row.get("due_at"),
    )
    _copy_rule_columns(entry, row)
    reason = entry.exclusion_reason
    as_of = _instant(row.get("as_of")) if row.get("as_of") else None
    if reason in _SUPPRESSION_REASONS:
        entry.consent_change = _deciding(history, spec.suppression_list, as_of)
        source = entry.suppression_reason or (entry.consent_change or {}).get("source")
        entry.summary = f"NOT SENT: suppressed ({source or 'manual'})"
    elif reason in _CONSENT_REASONS:
        entry.consent_change = _deciding(history, spec.consent_list, as_of)
        entry.summary = f"NOT SENT: {reason}"
        if entry.consent_change is None:
            entry.summary += f": never subscribed to {spec.consent_list}"
    elif reason is None:
        entry.summary = f"ELIGIBLE: the next tick sends it (due {_when(entry.due_at)})"
    elif reason == "not_due":
        entry.summary = f"NOT YET: due {_when(entry.due_at)}"
    elif reason == "best_hour":
        entry.summary = f"NOT YET: due at the customer's best hour, {_when(entry.due_at)}"
    elif reason == "expired":
        entry.summary = f"NOT SENT: expired {_when(entry.expires_at)} before it could go out"
    else:
        entry.summary = f"NOT SENT: {reason}"
    entry.summary += _change_text(entry.consent_change)
    return entry


def format_why(result: Why) -> str:
    """What ``nudge why`` prints: the person, their consent, then each step, newest first."""
    who = "known" if result.known else "not in staging.stg_raw__customers"
    lines = [
        f"why: customer {result.customer_id} ({who}{', ' + result.email if result.email else ''})"
    ]
    if result.erasure.get("erased"):
        lines.append(
            f"  ERASED on {_when(result.erasure.get('erased_at'))}: nudge keeps only "
            "pseudonymised rows"
        )
    if result.erasure.get("address_erased_at"):
        lines.append(
            f"  their address was erased on {_when(result.erasure['address_erased_at'])}: "
            "suppressed for good (source erasure)"
        )
    consent = "; ".join(
        f"{c['list']} {c['status']} ({c.get('source') or '?'}, {_when(c['changed_at'])})"
        for c in result.consent
    )
    lines.append(f"  consent now: {consent or 'no consent changes'}")
    for c in result.pending_consent:
        lines.append(
            f"  not drained yet (the next tick's re-check sees it): {c['list']} {c['status']} "
            f"({c['source']}, {_when(c['changed_at'])})"
        )
    if not result.entries:
        lines.append(
            "\nno sends in the ledger and no step in the eligibility tables"
            + (f" as of {_when(result.eligibility_as_of)}" if result.eligibility_as_of else "")
            + ": not an entry of any trigger around the last tick"
        )
        return "\n".join(lines)
    lines.append(
        "\n"
        + (
            f"steps (eligibility as of {_when(result.eligibility_as_of)}), newest first:"
            if result.eligibility_as_of
            else "steps, newest first:"
        )
    )
    for e in result.entries:
        rule = f" [eligibility: {e.exclusion_reason}]" if e.status and e.exclusion_reason else ""
        lines.append(f"  {_when(e.when):<20}  {e.trigger}/{e.step}  {e.summary}{rule}")
        lines.append(f"  {'':<20}  key {e.trigger_key}  send_id {e.send_id}")
    return "\n".join(lines)
