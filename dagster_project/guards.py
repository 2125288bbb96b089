"""Every check that holds, delays or drops a send before it reaches a provider.

Before anything is planned (a trigger's whole push):

* **Late tick.** A send step asked to send for an ``as_of`` far in the past (re-executing
  yesterday's failed run) would send on yesterday's consent: refused unless allowed.
* **Source freshness.** Triggers that fire on the *absence* of activity (no order since the
  cart, no visit for 90 days) read a broken ingestion pipeline as "everybody lapsed". When the
  newest event is older than a limit, those triggers are held whole.
* **Mass send.** A bug in a trigger's SQL (a dropped join, a wrong date) shows up as a tick
  that wants to mail far more people than usual. If a tick's new sends exceed an absolute cap,
  or a multiple of the trailing median of the trigger's recent ticks, they are held: nothing is
  planned or sent, the run says so loudly, and an explicit approval releases it
  (``nudge run --approve TRIGGER``).

Just before each batch is handed to the provider (the push-time re-checks):

* **Consent and suppression.** What landed after the tick's dbt build is honoured, in the
  warehouse and in ``nudge serve``'s landing store (not drained yet): a suppression (hard
  bounce, complaint, erasure) for every category, an unsubscribe for marketing.
* **Quiet hours.** A tick that runs late (re-executed, or after a long wait for the warehouse
  lock) must not mail a recipient at night; those sends wait for a later tick.

The decisions are plain functions over numbers and rows; ``dispatch.py`` gathers the inputs
and acts on the answers (the ledger records every skip with its reason).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .landing import ConsentChange
from .policy import GuardPolicy
from .providers import Message
from .warehouse import Connection, one, quote_relation, sql_for
from .webhooks import EmailEvent

MIN_BASELINE_TICKS = 3


# -- before planning --------------------------------------------------------------------------


class LateTickError(RuntimeError):
    """A send step was asked to send for an instant too far in the past."""


def check_not_late(
    as_of: datetime, *, max_lag_hours: float, allow_late: bool, now: datetime | None = None
) -> None:
    """Refuse to send for a stale instant unless explicitly allowed.

    Re-executing yesterday's failed run keeps yesterday's as_of: its dbt build would ignore
    every unsubscribe and order since, and mail people who have since bought or opted out.
    """
    now = now or datetime.now(UTC)
    lag_hours = (now - as_of).total_seconds() / 3600
    if lag_hours > max_lag_hours and not allow_late:
        raise LateTickError(
            f"as_of {as_of.isoformat()} is {lag_hours:.1f} h old "
            f"(limit {max_lag_hours:g} h): sending now would ignore consent and orders "
            "since then. Run a fresh tick, or set resources.tick.config.allow_late "
            "(nudge run --allow-late) to send anyway."
        )


def newest_event(con: Connection, events: str) -> datetime | None:
    """The newest event the tick's models see (the freshness guard's input)."""
    row = one(con, sql_for(con, "guards/newest_event").format(events=quote_relation(events)))
    return row[0] if row else None


def freshness_hold(
    trigger: str, newest: datetime | None, as_of: datetime, policy: GuardPolicy
) -> str | None:
    """Why an absence trigger must be held because events look stale, or ``None``.

    An approval releases this hold too: the operator has checked the pipeline.
    """
    if trigger in policy.approved:
        return None
    if newest is None:
        return "no events at all at this tick: is the events pipeline loading?"
    age_hours = (as_of - newest).total_seconds() / 3600
    if age_hours > policy.freshness_max_hours:
        return (
            f"the newest event is {age_hours:.1f} h old (limit "
            f"{policy.freshness_max_hours:g} h, NUDGE_FRESHNESS_MAX_HOURS): with stale events "
            "everyone looks inactive, so this absence trigger is held"
        )
    return None


def mass_send_hold(
    trigger: str, new: int, recent: Sequence[int], policy: GuardPolicy
) -> str | None:
    """Why this tick's ``new`` sends must be held, or ``None`` to let them go.

    ``recent`` holds the new-send counts of the trigger's last ticks. The baseline is the median
    of those that sent anything: bursty triggers (birthdays at 09:00 local) are quiet most hours,
    and a median dominated by zeros would hold every burst.
    """
    if trigger in policy.approved or new == 0:
        return None
    if new > policy.mass_send_max:
        return (
            f"{new} new sends exceed the cap of {policy.mass_send_max} per tick "
            "(NUDGE_MASS_SEND_MAX)"
        )
    busy = [n for n in recent if n > 0]
    if new < policy.mass_send_min or len(busy) < MIN_BASELINE_TICKS:
        return None
    baseline = statistics.median(busy)
    if new > policy.mass_send_multiple * baseline:
        return (
            f"{new} new sends are more than {policy.mass_send_multiple:g}x the median of "
            f"{baseline:g} over the last {len(busy)} ticks with sends "
            "(NUDGE_MASS_SEND_MULTIPLE)"
        )
    return None


@dataclass(frozen=True)
class Deliverability:
    """One provider's trailing-window figures, as the deliverability guard reads them."""

    provider: str
    sends: int
    hard_bounces: int
    complaints: int

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sends if self.sends else 0.0

    @property
    def hard_bounce_rate(self) -> float:
        return self.hard_bounces / self.sends if self.sends else 0.0


DELIVERABILITY_WINDOW = timedelta(hours=24)


def deliverability(con: Connection, provider: str, until: datetime) -> Deliverability:
    """The provider's sends, hard bounces and complaints over the 24 h before ``until``."""
    row = one(
        con,
        sql_for(con, "guards/deliverability"),
        {"provider": provider, "since": until - DELIVERABILITY_WINDOW, "until": until},
    )
    sends, hard_bounces, complaints = row if row else (0, 0, 0)
    return Deliverability(provider, int(sends), int(hard_bounces), int(complaints))


def deliverability_hold(
    trigger: str, category: str, figures: Deliverability, policy: GuardPolicy
) -> str | None:
    """Why this marketing trigger must be held for the sender's reputation, or ``None``.

    Mailbox providers throttle or junk a sender whose complaints pass 0.3 % (Gmail's published
    limit) or who keeps mailing dead addresses; past that, every further marketing email makes
    it worse for the transactional ones too. So marketing stops until an operator looks
    (``--approve``), and transactional mail goes on. Below ``deliverability_min_sends`` the
    rates are noise: one complaint in 20 sends is not 5 %.
    """
    if category != "marketing" or trigger in policy.approved:
        return None
    if figures.sends < policy.deliverability_min_sends:
        return None
    if figures.complaint_rate > policy.complaint_rate_max:
        return (
            f"{figures.provider}'s spam complaint rate over the last 24 h is "
            f"{figures.complaint_rate:.2%} ({figures.complaints} of {figures.sends} sends), above "
            f"{policy.complaint_rate_max:.2%} (NUDGE_COMPLAINT_RATE_MAX): marketing is held to "
            "protect the sender's reputation"
        )
    if figures.hard_bounce_rate > policy.hard_bounce_rate_max:
        return (
            f"{figures.provider}'s hard bounce rate over the last 24 h is "
            f"{figures.hard_bounce_rate:.2%} ({figures.hard_bounces} of {figures.sends} sends), "
            f"above {policy.hard_bounce_rate_max:.2%} (NUDGE_HARD_BOUNCE_RATE_MAX): marketing is "
            "held until the list is cleaned"
        )
    return None


def failure_rate(sent: int, failed: int, unknown: int) -> float:
    """Share of this run's attempted sends that did not go out (0 when nothing was attempted)."""
    attempted = sent + failed + unknown
    return (failed + unknown) / attempted if attempted else 0.0


# -- just before the push ---------------------------------------------------------------------


@dataclass(frozen=True)
class OptOut:
    """Sends a push-time re-check drops, and the reason the ledger records for them."""

    send_ids: list[str]
    reason: str  # suppressed_before_send | unsubscribed_before_send
    error: str


@dataclass(frozen=True)
class ConsentLists:
    """The lists the push-time consent re-check reads, and from where."""

    subscriptions: str  # int_consent__changes: every source, not limited to as_of
    consent_list: str  # marketing consent
    suppression_list: str  # suppressed on it: no email of any category
    marketing: bool  # the trigger is marketing (consent needed)


class PendingChanges(Protocol):
    """Consent changes and provider events stored by ``nudge serve`` and perhaps not drained
    into the warehouse yet (``landing.LandingStore``)."""

    def changes_for(
        self, customer_ids: Iterable[str], lists: Sequence[str]
    ) -> Sequence[ConsentChange]: ...

    def opt_outs_for(self, emails: Iterable[str]) -> Sequence[EmailEvent]: ...

    def recent_opt_outs(self) -> Sequence[EmailEvent]: ...


def _event_change(event: EmailEvent, consent_list: str, lists: ConsentLists) -> LatestChange | None:
    """What a provider's event says about ``consent_list``, as int_consent__from_email_events
    reads it: a hard bounce or complaint suppresses, an unsubscribe unsubscribes (marketing)."""
    if consent_list == lists.suppression_list:
        if event.event_type == "complained":
            return ("suppressed", event.occurred_at, "complaint")
        if event.event_type == "bounced" and event.bounce_type == "hard":
            return ("suppressed", event.occurred_at, "hard_bounce")
    elif consent_list == lists.consent_list and event.event_type == "unsubscribed":
        return ("unsubscribed", event.occurred_at, f"provider:{event.provider}")
    return None


def recheck_consent(
    con: Connection,
    messages: Sequence[Message],
    lists: ConsentLists,
    *,
    cutoff: datetime,
    pending: PendingChanges | None = None,
) -> tuple[list[Message], list[OptOut]]:
    """Drop the messages whose recipient was suppressed (any category) or unsubscribed
    (marketing) by ``cutoff``, counting changes that landed after the tick's dbt build: in the
    warehouse, and in the service's landing store (``pending``), so an unsubscribe stored a
    second before this batch is honoured by it. The store's provider events count by address:
    a hard bounce or complaint reported for the recipient's address a second ago stops it."""
    checks = [(lists.suppression_list, "suppressed", "suppressed_before_send")]
    if lists.marketing:
        checks.append((lists.consent_list, "unsubscribed", "unsubscribed_before_send"))
    remaining = list(messages)
    dropped: list[OptOut] = []
    for consent_list, status, reason in checks:
        if not remaining:
            break
        latest = latest_consent(
            con,
            lists.subscriptions,
            [m.customer_id for m in remaining],
            consent_list=consent_list,
            cutoff=cutoff,
            pending=pending,
        )
        if pending is not None:
            _merge_events(con, latest, pending, remaining, consent_list, lists, cutoff)
        opted_out = {customer for customer, change in latest.items() if change[0] == status}
        if opted_out:
            dropped.append(
                OptOut(
                    [m.send_id for m in remaining if m.customer_id in opted_out],
                    reason,
                    f"{status} after the tick's eligibility was built",
                )
            )
            remaining = [m for m in remaining if m.customer_id not in opted_out]
    return remaining, dropped


# (status, changed_at, source): what decides a customer's state on one list.
LatestChange = tuple[str, datetime, str]


def latest_consent(
    con: Connection,
    subscriptions: str,
    customer_ids: Sequence[str],
    *,
    consent_list: str,
    cutoff: datetime,
    pending: PendingChanges | None = None,
) -> dict[str, LatestChange]:
    """Each customer's latest change on ``consent_list`` up to ``cutoff``, from the warehouse
    and the landing store, ordered as int_subscriptions__latest orders them."""
    ids = list(set(customer_ids))
    rows = con.execute(
        sql_for(con, "guards/latest_consent").format(subscriptions=quote_relation(subscriptions)),
        {"customer_ids": ids, "list": consent_list, "cutoff": cutoff},
    ).fetchall()
    latest: dict[str, LatestChange] = {r[0]: (r[1], r[2], r[3]) for r in rows}
    if pending is not None:
        for change in pending.changes_for(ids, [consent_list]):
            changed_at = change.changed_at
            if changed_at > cutoff:
                # As in latest_consent.sql: a "no" someone gave the service is real, whatever
                # instant a replayed tick stands for, and counts as of the cutoff; a later
                # "yes" is that replay's future.
                if change.status not in ("unsubscribed", "suppressed"):
                    continue
                changed_at = cutoff
            candidate = (change.status, changed_at, change.source)
            current = latest.get(change.customer_id)
            if current is None or _order(candidate) > _order(current):
                latest[change.customer_id] = candidate
    return latest


def _merge_events(
    con: Connection,
    latest: dict[str, LatestChange],
    pending: PendingChanges,
    messages: Sequence[Message],
    consent_list: str,
    lists: ConsentLists,
    cutoff: datetime,
) -> None:
    """Fold the store's "do not mail" provider events about these recipients into ``latest`` by
    the same order (a "no" after the cutoff counts, as of the cutoff), mapped to people as
    int_consent__from_email_events maps them: by the address the event names (or, when it names
    none, the address its send went to), and a complaint or unsubscribe also to the customer its
    send was for, whatever their address now. Events drained before this run's build are in
    that model; those drained since (by another run) are among the store's recent ones."""
    by_email: dict[str, set[str]] = {}
    batch = {m.customer_id for m in messages}
    for message in messages:
        if message.to_email:
            by_email.setdefault(message.to_email.strip().lower(), set()).add(message.customer_id)
    found = {e.event_id: e for e in pending.opt_outs_for(by_email)} if by_email else {}
    found.update((e.event_id, e) for e in pending.recent_opt_outs())
    events = [e for e in found.values() if _event_change(e, consent_list, lists) is not None]
    send_ids = sorted({e.send_id for e in events if e.send_id})
    sends: dict[str, tuple[str, str | None]] = {}
    if send_ids:
        rows = con.execute(sql_for(con, "guards/sends_of"), {"send_ids": send_ids}).fetchall()
        sends = {r[0]: (str(r[1]), r[2]) for r in rows}
    for event in events:
        candidate = _event_change(event, consent_list, lists)
        assert candidate is not None
        status, changed_at, source = candidate
        candidate = (status, min(changed_at, cutoff), source)
        customer, sent_to = sends.get(event.send_id or "", (None, None))
        address = event.email or sent_to
        people = set(by_email.get(address, ())) if address else set()
        if customer in batch and event.event_type in PERSON_LEVEL:
            people.add(customer)
        for customer_id in people:
            current = latest.get(customer_id)
            if current is None or _order(candidate) > _order(current):
                latest[customer_id] = candidate


# A complaint or an unsubscribe is the person's word, wherever they read it; a bounce is about
# the address only (a customer who moved to a working address is mailed there).
PERSON_LEVEL = frozenset({"complained", "unsubscribed"})


def _order(change: LatestChange) -> tuple[bool, datetime, bool]:
    status, changed_at, source = change
    return (source == "erasure", changed_at, status == "unsubscribed")


def at_night(
    messages: Sequence[Message],
    contexts: Mapping[str, str],
    *,
    instant: datetime,
    window: tuple[int, int],
) -> set[str]:
    """The send_ids whose recipient is in quiet hours at ``instant``.

    The tick's rules judged quiet hours at its as_of; a tick running late must not mail at
    night. ``contexts`` maps send_id to the ledger context JSON (its ``timezone``).
    """
    # One answer per time zone: a batch has thousands of recipients and a few dozen zones.
    night: dict[str | None, bool] = {}
    out = set()
    for m in messages:
        timezone = _timezone(contexts.get(m.send_id))
        asleep = night.get(timezone)
        if asleep is None:
            asleep = night[timezone] = in_quiet_hours(instant, timezone, window)
        if asleep:
            out.add(m.send_id)
    return out


def _timezone(context_json: str | None) -> str | None:
    try:
        value = json.loads(context_json or "{}").get("timezone")
    except (json.JSONDecodeError, AttributeError):
        return None
    return str(value) if value else None


def in_quiet_hours(instant: datetime, timezone: str | None, window: tuple[int, int]) -> bool:
    """Whether ``instant`` falls in [start, end) local hours of ``timezone`` (UTC if unknown)."""
    start, end = window
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    hour = instant.astimezone(zone).hour
    return hour >= start or hour < end if start > end else start <= hour < end


class JournalElsewhereError(RuntimeError):
    """A trigger's sends may be on the wire, recorded in a hand-over journal kept elsewhere."""


def journal_identity(journal: Path) -> str:
    """``<id> <machine>:<folder>`` of a hand-over journal, as ``nudge.open_journals`` keeps it.

    The id is made once per journal folder and kept in it (``.owner``), so the same folder is
    the same journal wherever it is mounted (a new container has a new host name); two folders
    are two journals even at the same path on two machines. Written whole and synced before it
    is linked into place, so a crash never leaves an empty id behind."""
    marker = journal / ".owner"
    try:
        journal.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            draft = journal / f".owner.{uuid.uuid4().hex}"
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(descriptor, uuid.uuid4().hex.encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            try:
                os.link(draft, marker)  # fails if another process linked its own first
            except FileExistsError:
                pass
            finally:
                draft.unlink()
            folder = os.open(journal, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        owner_id = marker.read_text().strip()
    except OSError as exc:
        raise JournalElsewhereError(
            f"cannot keep the hand-over journal in {journal}: {exc.strerror or exc}"
        ) from None
    if not owner_id:
        raise JournalElsewhereError(f"{marker} is empty: remove it only if the folder is new")
    return f"{owner_id} {socket.gethostname()}:{journal.resolve()}"


def _same_journal(recorded: str, mine: str) -> bool:
    return recorded.split(" ", 1)[0] == mine.split(" ", 1)[0]


def check_journal(con: Connection, trigger: str, journal: Path) -> None:
    """Refuse to push a trigger whose sends may be on the wire, recorded in another journal.

    On PostgreSQL the ledger is shared and the journal is a local folder. A push that died
    mid-request left sends ``planned`` in the ledger that only its journal tells apart:
    handed over (maybe delivered) or not. A run on another machine, or one whose journal
    folder is another, would read an empty journal and send them again. So it stops and says
    where the journal is. Only a push that may have had requests on the wire leaves its
    journal recorded (``nudge.open_journals``); quiet-hours and paused sends do not block.
    The caller holds the warehouse lock.
    """
    row = one(con, sql_for(con, "guards/open_journal"), {"trigger": trigger})
    if row is None:
        return
    recorded, mine = str(row[0]), journal_identity(journal)
    if not _same_journal(recorded, mine):
        raise JournalElsewhereError(
            f"{trigger}: a push that died may have sends on the wire, recorded in its hand-over "
            f"journal at {recorded.split(' ', 1)[-1]}; this run's journal is "
            f"{mine.split(' ', 1)[-1]}. Run nudge there, or mount that folder here, so they "
            "are settled from it. If it is lost for good: `nudge resolve-unknown "
            f"--journal-lost {trigger}` marks the trigger's unfinished sends unknown, for you "
            "to resend or drop."
        )


def journal_opened(con: Connection, trigger: str, journal: Path) -> None:
    """This push's journal is about to hold the trigger's requests on the wire."""
    con.execute(
        sql_for(con, "guards/open_journal_record"),
        {"trigger": trigger, "journal": journal_identity(journal)},
    )


def journal_settled(con: Connection, trigger: str) -> None:
    """Nothing of the trigger is on the wire any more (see ``open_journal_forget.sql``)."""
    con.execute(sql_for(con, "guards/open_journal_forget"), {"trigger": trigger})
