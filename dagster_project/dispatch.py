"""One trigger's push for one tick: guards, diff, plan, render, consent re-check, send, settle.

What if the process dies here? Each step leaves the ledger in a state the next run handles:
- before ``plan``: nothing recorded, the next tick plans the same sends again;
- after ``plan``: rows are ``planned`` and never reached the ESP; the next run resumes them,
  after re-checking them against its own eligibility table (consent may have changed);
- after ``claim_batch``: rows are ``sending`` (committed before the request) with the batch's
  idempotency key: the next run resends the same batch with the same key through an idempotent
  provider, else marks them ``unknown`` (``nudge resolve-unknown`` decides);
- mid-``settle``: the settle is one transaction, rolled back whole: as after ``claim_batch``;
- after ``settle``: final, except ``failed_retryable``, which later ticks resume with backoff.
The named failpoints (``failpoints.hit``) are where the kill-and-rerun tests SIGKILL a real
process.
What if two runs do this at once? The caller holds the warehouse lock, and the ledger's primary
key makes ``plan`` claim each send_id for exactly one run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

from . import failpoints, guards, ledger
from .guards import GuardPolicy
from .ledger import FrequencyCaps, RetryPolicy
from .masking import mask_emails_in_text
from .providers import Message, Provider, SendResult
from .rendering import Renderer, RenderError, context_from_json
from .triggers import ProjectRelations, TriggerSpec
from .warehouse import quote_relation

log = logging.getLogger(__name__)


@dataclass
class TriggerSummary:
    """Per-trigger counts of one tick, recorded as Dagster metadata and printed by the CLI."""

    trigger: str
    step: str
    as_of: str
    candidates: int = 0
    eligible: int = 0
    already_sent: int = 0
    new: int = 0
    resumed: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    expired: int = 0
    skipped: int = 0
    # Due steps recorded without a send: held out for lift, capped and waiting.
    holdout: int = 0
    deferred: int = 0
    # Due steps skipped when planned (condition false, or capped under cap_policy skip).
    skipped_at_plan: int = 0
    # Planned, but the tick ran when it was night for the recipient: left for a later tick.
    waiting_quiet_hours: int = 0
    # Sends this tick would have planned but a guard held back (nothing written or sent).
    held: int = 0
    held_by: str | None = None  # the guard that held them: mass_send | source_freshness
    hold_reason: str | None = None
    # ok | held | paused | stale_table | failed: what nudge.runs records for this trigger and run.
    outcome: str = "ok"
    failure_rate: float = 0.0
    duplicate_deliveries: int = 0
    duration_seconds: float = 0.0
    excluded: dict[str, int] = field(default_factory=dict)
    skipped_reason: str | None = None
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eligibility_counts(
    con: duckdb.DuckDBPyConnection, relation: str
) -> tuple[datetime | None, int, int, dict[str, int]]:
    """The as_of the table was built for, its candidates, eligible rows and exclusions by reason."""
    table = quote_relation(relation)
    totals = con.execute(
        f"select max(as_of), count(*), count(*) filter (where is_eligible) from {table}"
    ).fetchone()
    assert totals is not None
    reasons = con.execute(
        f"""
        select exclusion_reason, count(*) from {table}
        where exclusion_reason is not null
        group by exclusion_reason order by exclusion_reason
        """
    ).fetchall()
    return totals[0], totals[1], totals[2], dict(reasons)


def render_batch(
    spec: TriggerSpec,
    renderer: Renderer,
    batch: Sequence[tuple[str, str]],
    from_email: str,
) -> tuple[list[Message], list[SendResult]]:
    """Render a batch of ``(send_id, context json)``; a row that fails is a permanent failure."""
    messages: list[Message] = []
    failures: list[SendResult] = []
    for send_id, context_json in batch:
        try:
            context = context_from_json(context_json)
            messages.append(_message(spec, renderer, send_id, context, from_email))
        except (RenderError, json.JSONDecodeError) as exc:
            failures.append(
                SendResult(send_id=send_id, status="failed", error=f"render: {exc}", attempts=0)
            )
    return messages, failures


def _message(
    spec: TriggerSpec, renderer: Renderer, send_id: str, context: dict[str, Any], from_email: str
) -> Message:
    email = context.get("email")
    if not email:
        raise RenderError("the eligibility row has no email")
    step = str(context.get("step") or spec.steps[0].name)
    template = context.get("template") or f"{spec.name}/{step}"
    if template not in spec.templates:
        # The row was built by another version of the trigger's YAML: never guess a template.
        raise RenderError(
            f"template {template!r} is not one of trigger {spec.name}'s steps or variants "
            f"({', '.join(spec.templates)})"
        )
    rendered = renderer.render(template, context)
    custom_args = {"send_id": send_id, "trigger": spec.name, "step": step}
    if context.get("variant"):
        custom_args["variant"] = str(context["variant"])
    return Message(
        send_id=send_id,
        trigger=spec.name,
        step=step,
        customer_id=str(context.get("customer_id")),
        to_email=email,
        from_email=from_email,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        custom_args=custom_args,
    )


@dataclass(frozen=True)
class DispatchPolicy:
    """How a push behaves: batch size, retries across ticks, guards."""

    batch_size: int = 100
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    guards: GuardPolicy = field(default_factory=GuardPolicy)
    caps: FrequencyCaps = field(default_factory=FrequencyCaps)
    # Triggers switched off by configuration (NUDGE_PAUSED_TRIGGERS): nothing moves for them.
    paused: frozenset[str] = frozenset()


def dispatch_trigger(
    con: duckdb.DuckDBPyConnection,
    spec: TriggerSpec,
    *,
    provider: Provider,
    renderer: Renderer,
    as_of: datetime,
    run_id: str,
    from_email: str,
    policy: DispatchPolicy | None = None,
    relations: ProjectRelations | None = None,
    consent_cutoff: datetime | None = None,
    competitors: Sequence[str] = (),
) -> TriggerSummary:
    """Send this tick's due emails of one trigger exactly once; return what happened.

    ``consent_cutoff``: consent changes up to this instant are honoured at push time (the live
    tick passes "now"; a simulation of a past tick passes its as_of). Every call, even a failed
    one, leaves its row in ``nudge.runs``. ``competitors``: the eligibility relations of the
    marketing triggers with a higher priority (they win a customer's frequency-cap slot).
    """
    policy = policy or DispatchPolicy()
    summary = TriggerSummary(trigger=spec.name, step=spec.step_names, as_of=as_of.isoformat())
    started = datetime.now(UTC)
    clock = time.monotonic()
    ledger.ensure_ledger(con)
    if spec.name in policy.paused:
        # Switched off by configuration: nothing planned, resumed or sent. Steps that fall due
        # meanwhile go out when it is switched on again if their grace window is still open.
        summary.outcome = "paused"
        summary.skipped_reason = f"trigger {spec.name} is paused (NUDGE_PAUSED_TRIGGERS)"
        _record_run(con, summary, run_id=run_id, provider=provider.name, started=started)
        return summary
    for template in spec.templates:
        renderer.check(template)
    try:
        _dispatch(
            con,
            spec,
            summary,
            provider=provider,
            renderer=renderer,
            as_of=as_of,
            run_id=run_id,
            from_email=from_email,
            policy=policy,
            relations=relations or ProjectRelations(),
            consent_cutoff=consent_cutoff or as_of,
            competitors=competitors,
        )
    except Exception as exc:
        summary.outcome = "failed"
        summary.errors.insert(0, mask_emails_in_text(f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        summary.duration_seconds = round(time.monotonic() - clock, 3)
        _record_run(con, summary, run_id=run_id, provider=provider.name, started=started)
    return summary


def _dispatch(
    con: duckdb.DuckDBPyConnection,
    spec: TriggerSpec,
    summary: TriggerSummary,
    *,
    provider: Provider,
    renderer: Renderer,
    as_of: datetime,
    run_id: str,
    from_email: str,
    policy: DispatchPolicy,
    relations: ProjectRelations,
    consent_cutoff: datetime,
    competitors: Sequence[str],
) -> None:
    plan_options: dict[str, Any] = {
        "cap_policy": spec.sequence.cap_policy,
        "caps": policy.caps,
        "competitors": competitors,
    }
    built_for, candidates, eligible, excluded = eligibility_counts(con, spec.relation)
    summary.candidates, summary.eligible, summary.excluded = candidates, eligible, excluded
    summary.already_sent = excluded.get("already_sent", 0)
    if candidates and built_for is not None and built_for != as_of:
        # Another run rebuilt the table for its own tick between our dbt build and this step;
        # that run sends from it. Sending its rows under our as_of would misjudge due/expiry.
        summary.outcome = "stale_table"
        summary.skipped_reason = (
            f"{spec.relation} was built for as_of {built_for.isoformat()}, not this tick's "
            f"{as_of.isoformat()}; another run rebuilt it and will send from it"
        )
        log.warning(summary.skipped_reason)
        return

    if spec.fires_on_absence:
        newest = con.execute(
            f"select max(occurred_at) from {quote_relation(relations.events)}"
        ).fetchone()
        reason = guards.freshness_hold(
            spec.name, newest[0] if newest else None, as_of, policy.guards
        )
        if reason:
            # Held whole: resuming old sends would re-check them against the same stale data.
            with ledger.planning(
                con,
                eligibility=spec.relation,
                run_id=run_id,
                as_of=as_of,
                provider=provider.name,
                **plan_options,
            ) as decision:
                decision.hold()
            _hold(summary, decision.count, reason, "source_freshness")
            return

    resumed = ledger.resume(
        con,
        trigger=spec.name,
        eligibility=spec.relation,
        run_id=run_id,
        as_of=as_of,
        provider=provider.name,
        idempotent=provider.limits.idempotent,
        retry=policy.retry,
    )
    # Every unfinished send of an earlier run taken over: sent now, or settled as skipped,
    # expired, failed or unknown.
    summary.resumed = sum(resumed.values())
    with ledger.planning(
        con,
        eligibility=spec.relation,
        run_id=run_id,
        as_of=as_of,
        provider=provider.name,
        **plan_options,
    ) as decision:
        recent = ledger.recent_new_counts(
            con, trigger=spec.name, before=as_of, ticks=policy.guards.mass_send_history_ticks
        )
        reason = guards.mass_send_hold(spec.name, decision.count, recent, policy.guards)
        if reason:
            decision.hold()
    # Capped by the frequency cap at this tick (recorded as deferred unless the tick is held).
    summary.deferred = decision.deferred
    if decision.held:
        _hold(summary, decision.count, reason or "held", "mass_send")
    else:
        summary.new = decision.count
        summary.skipped_at_plan = decision.by_status.get("skipped", 0)
    failpoints.hit("after_plan")

    batch_size = min(policy.batch_size, provider.limits.max_batch)
    for batch in ledger.planned_batches(
        con, trigger=spec.name, run_id=run_id, batch_size=batch_size
    ):
        _push_batch(
            con,
            spec,
            summary,
            batch,
            provider=provider,
            renderer=renderer,
            as_of=as_of,
            run_id=run_id,
            from_email=from_email,
            policy=policy,
            relations=relations,
            consent_cutoff=consent_cutoff,
        )

    counts = ledger.status_counts(con, trigger=spec.name, run_id=run_id)
    summary.sent = counts.get("sent", 0)
    summary.failed = counts.get("failed_permanent", 0) + counts.get("failed_retryable", 0)
    summary.unknown = counts.get("unknown", 0)
    summary.expired = counts.get("expired", 0)
    summary.skipped = counts.get("skipped", 0)
    summary.holdout = counts.get("holdout", 0)
    summary.failure_rate = round(
        guards.failure_rate(summary.sent, summary.failed, summary.unknown), 4
    )
    summary.duplicate_deliveries = ledger.duplicate_deliveries(con, trigger=spec.name)
    log.info(
        "trigger %s: %d candidates, %d eligible, %d new, %d sent, %d failed, %d held, "
        "%d holdout, %d deferred",
        spec.name,
        summary.candidates,
        summary.eligible,
        summary.new,
        summary.sent,
        summary.failed,
        summary.held,
        summary.holdout,
        summary.deferred,
    )


def _hold(summary: TriggerSummary, count: int, reason: str, guard: str) -> None:
    summary.outcome = "held"
    summary.held_by = guard
    summary.held = count
    summary.hold_reason = reason
    log.error("trigger %s: %d new sends held: %s", summary.trigger, count, reason)


def _push_batch(
    con: duckdb.DuckDBPyConnection,
    spec: TriggerSpec,
    summary: TriggerSummary,
    batch: list[tuple[str, str, str, str | None]],
    *,
    provider: Provider,
    renderer: Renderer,
    as_of: datetime,
    run_id: str,
    from_email: str,
    policy: DispatchPolicy,
    relations: ProjectRelations,
    consent_cutoff: datetime,
) -> None:
    """Render, re-check consent, claim, send and settle one batch."""
    messages, render_failures = render_batch(
        spec, renderer, [(send_id, context) for send_id, _, context, _ in batch], from_email
    )
    ledger.settle(con, run_id=run_id, results=render_failures, as_of=as_of, retry=policy.retry)
    summary.errors.extend(f"{f.send_id}: {f.error}" for f in render_failures)

    # What landed after this tick's dbt build is honoured here: a suppression (hard bounce,
    # complaint) for every category, an unsubscribe for marketing.
    checks = [(spec.suppression_list, "suppressed", "suppressed_before_send")]
    if spec.category == "marketing":
        checks.append((spec.consent_list, "unsubscribed", "unsubscribed_before_send"))
    for consent_list, status, reason in checks:
        if not messages:
            break
        opted_out = ledger.unsubscribed_now(
            con,
            subscriptions=relations.subscriptions,
            customer_ids=[m.customer_id for m in messages],
            consent_list=consent_list,
            cutoff=consent_cutoff,
            status=status,
        )
        if opted_out:
            ledger.skip(
                con,
                run_id=run_id,
                send_ids=[m.send_id for m in messages if m.customer_id in opted_out],
                reason=reason,
                error=f"{status} after the tick's eligibility was built",
                as_of=as_of,
            )
            messages = [m for m in messages if m.customer_id not in opted_out]
    # An interrupted batch resent under its key must go whole (same key, same body).
    if messages and spec.sequence.quiet_hours and batch[0][3] is None:
        # The tick's rules judged quiet hours at as_of; a tick that runs late (re-executed,
        # or after a long wait for the warehouse lock) must not mail at night. The rows stay
        # planned: the next tick resumes them once it is morning for the recipient.
        zones = {send_id: _timezone(context) for send_id, _, context, _ in batch}
        night = {
            m.send_id
            for m in messages
            if in_quiet_hours(consent_cutoff, zones.get(m.send_id), spec.quiet_hours_window)
        }
        if night:
            summary.waiting_quiet_hours += len(night)
            messages = [m for m in messages if m.send_id not in night]
    if not messages:
        return

    # A batch resumed after a crash keeps the key it was first sent with.
    key = batch[0][3] or ledger.batch_key([m.send_id for m in messages])
    claimed = ledger.claim_batch(
        con, run_id=run_id, send_ids=[m.send_id for m in messages], batch_id=key, as_of=as_of
    )
    to_send = [m for m in messages if m.send_id in claimed]
    if not to_send:
        return
    failpoints.hit("after_claim")
    results = provider.send(to_send, idempotency_key=key)
    failpoints.hit("after_send")
    ledger.settle(con, run_id=run_id, results=results, as_of=as_of, retry=policy.retry)
    summary.errors.extend(f"{r.send_id}: {r.error}" for r in results if r.status != "sent")


def _timezone(context_json: str) -> str | None:
    try:
        value = json.loads(context_json).get("timezone")
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


def _record_run(
    con: duckdb.DuckDBPyConnection,
    summary: TriggerSummary,
    *,
    run_id: str,
    provider: str,
    started: datetime,
) -> None:
    # Metadata and the run log stay small and free of personal data: the first reasons,
    # addresses masked (a provider's error text can quote the recipient); the ledger has all.
    summary.errors = [mask_emails_in_text(e) for e in summary.errors[:20]]
    try:
        ledger.record_run(
            con,
            {
                "run_id": run_id,
                "trigger": summary.trigger,
                "as_of": datetime.fromisoformat(summary.as_of),
                "started_at": started,
                "finished_at": datetime.now(UTC),
                "duration_seconds": summary.duration_seconds,
                "outcome": summary.outcome,
                "provider": provider,
                "candidates": summary.candidates,
                "eligible": summary.eligible,
                "new": summary.new,
                "resumed": summary.resumed,
                "sent": summary.sent,
                "failed": summary.failed,
                "unknown": summary.unknown,
                "expired": summary.expired,
                "skipped": summary.skipped,
                "held": summary.held,
                "hold_reason": summary.hold_reason,
                "holdout": summary.holdout,
                "deferred": summary.deferred,
                "errors": summary.errors,
            },
        )
    except duckdb.Error:
        # The run log must never turn a finished push into a failed step (and a retry).
        log.exception("could not record the run of trigger %s in nudge.runs", summary.trigger)
