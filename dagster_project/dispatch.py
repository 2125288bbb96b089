"""One trigger's push for one tick: diff, plan, render, send, settle.

What if the process dies here? Each step leaves the ledger in a state the next run handles:
- before ``plan``: nothing recorded, the next tick plans the same sends again;
- after ``plan``: rows are ``planned`` and never reached the ESP; the next run resumes them,
  after re-checking them against its own eligibility table (consent may have changed);
- after ``claim_batch``: rows are ``sending`` (committed before the request): the next run
  resends them only through an idempotent provider, else marks them ``unknown``;
- after ``settle``: final, except ``failed_retryable``, which later ticks resume.
What if two runs do this at once? The caller holds the warehouse lock, and the ledger's primary
key makes ``plan`` claim each send_id for exactly one run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from . import ledger
from .masking import mask_emails_in_text
from .providers import Message, Provider, SendResult
from .rendering import Renderer, RenderError, context_from_json
from .triggers import TriggerSpec
from .warehouse import quote_relation

log = logging.getLogger(__name__)

# Providers whose repeated delivery of the same send_id is harmless: the outbox overwrites the
# file named after the send_id. Others get 'unknown' rows after a crash mid-request.
IDEMPOTENT_PROVIDERS = ("outbox",)


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
    batch: list[tuple[str, str]],
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
    rendered = renderer.render(spec.name, spec.step, context)
    return Message(
        send_id=send_id,
        trigger=spec.name,
        step=spec.step,
        customer_id=str(context.get("customer_id")),
        to_email=email,
        from_email=from_email,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        custom_args={"send_id": send_id, "trigger": spec.name, "step": spec.step},
    )


def dispatch_trigger(
    con: duckdb.DuckDBPyConnection,
    spec: TriggerSpec,
    *,
    provider: Provider,
    renderer: Renderer,
    as_of: datetime,
    run_id: str,
    from_email: str,
    batch_size: int = 100,
) -> TriggerSummary:
    """Send this tick's due emails of one trigger exactly once; return what happened."""
    summary = TriggerSummary(trigger=spec.name, step=spec.step, as_of=as_of.isoformat())
    renderer.check(spec.name, spec.step)
    ledger.ensure_ledger(con)

    built_for, candidates, eligible, excluded = eligibility_counts(con, spec.relation)
    summary.candidates, summary.eligible, summary.excluded = candidates, eligible, excluded
    summary.already_sent = excluded.get("already_sent", 0)
    if candidates and built_for is not None and built_for != as_of:
        # Another run rebuilt the table for its own tick between our dbt build and this step;
        # that run sends from it. Sending its rows under our as_of would misjudge due/expiry.
        summary.skipped_reason = (
            f"{spec.relation} was built for as_of {built_for.isoformat()}, not this tick's "
            f"{as_of.isoformat()}; another run rebuilt it and will send from it"
        )
        log.warning(summary.skipped_reason)
        return summary

    resumed = ledger.resume(
        con,
        trigger=spec.name,
        eligibility=spec.relation,
        run_id=run_id,
        as_of=as_of,
        idempotent_providers=IDEMPOTENT_PROVIDERS,
    )
    # Every unfinished send of an earlier run taken over: sent now, or settled as skipped,
    # expired or unknown. new + resumed = sent + failed + unknown + expired + skipped.
    summary.resumed = sum(resumed.values())
    summary.new = ledger.plan(
        con, eligibility=spec.relation, run_id=run_id, as_of=as_of, provider=provider.name
    )

    for batch in ledger.planned_batches(
        con, trigger=spec.name, run_id=run_id, batch_size=batch_size
    ):
        messages, render_failures = render_batch(spec, renderer, batch, from_email)
        ledger.settle(con, run_id=run_id, results=render_failures)
        for failure in render_failures:
            summary.errors.append(f"{failure.send_id}: {failure.error}")

        claimed = ledger.claim_batch(con, run_id=run_id, send_ids=[m.send_id for m in messages])
        to_send = [m for m in messages if m.send_id in claimed]
        if to_send:
            results = provider.send(to_send)
            ledger.settle(con, run_id=run_id, results=results)
            summary.errors.extend(f"{r.send_id}: {r.error}" for r in results if r.status != "sent")

    counts = ledger.status_counts(con, trigger=spec.name, run_id=run_id)
    summary.sent = counts.get("sent", 0)
    summary.failed = counts.get("failed_permanent", 0) + counts.get("failed_retryable", 0)
    summary.unknown = counts.get("unknown", 0)
    summary.expired = counts.get("expired", 0)
    summary.skipped = counts.get("skipped", 0)
    # Metadata stays small and free of personal data: the first reasons, addresses masked (a
    # provider's error text can quote the recipient); the ledger has every reason in full.
    summary.errors = [mask_emails_in_text(e) for e in summary.errors[:20]]
    log.info(
        "trigger %s: %d candidates, %d eligible, %d new, %d sent, %d failed",
        spec.name,
        summary.candidates,
        summary.eligible,
        summary.new,
        summary.sent,
        summary.failed,
    )
    return summary
