"""What one tick did for one trigger: its counts, listed once, and the run log (``nudge.runs``).

:class:`RunCounts` is the one list of a tick's counts. The send asset's metadata, the CLI's
summary table, ``nudge.runs`` (whose columns carry the same names; a test checks it) and
``--json`` all iterate over it, so a new count is one new field here plus one column in a
ledger migration.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import ledger
from .masking import mask_emails_in_text
from .warehouse import DATABASE_ERRORS, Connection

log = logging.getLogger(__name__)


@dataclass
class RunCounts:
    """A tick's counts for one trigger, in the order people read them."""

    # Rows of the eligibility table, and those plannable now (the cap may still defer them).
    candidates: int = 0
    eligible: int = 0
    already_sent: int = 0
    # Planned by this tick, and taken over from earlier runs (crashed, retrying, deferred).
    new: int = 0
    resumed: int = 0
    # How this run's sends ended.
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    expired: int = 0
    skipped: int = 0
    # Due steps recorded without a send: held out for lift, capped and waiting.
    holdout: int = 0
    deferred: int = 0
    # Sends this tick would have planned but a guard held back (nothing written or sent).
    held: int = 0


COUNTS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunCounts))


@dataclass(kw_only=True)
class TriggerSummary(RunCounts):
    """One trigger's tick: its counts, outcome and first errors (metadata, CLI, run log)."""

    trigger: str
    steps: str  # the trigger's step names, for people
    as_of: str
    # Due steps skipped when planned (condition false, capped under cap_policy skip, ...).
    skipped_at_plan: int = 0
    # Planned, but the tick ran when it was night for the recipient: left for a later tick.
    waiting_quiet_hours: int = 0
    # The guard that held them: mass_send | source_freshness | deliverability.
    held_by: str | None = None
    hold_reason: str | None = None
    # ok | held | paused | stale_table | failed: what nudge.runs records for this trigger and run.
    outcome: str = "ok"
    failure_rate: float = 0.0
    duplicate_deliveries: int = 0
    duration_seconds: float = 0.0
    excluded: dict[str, int] = field(default_factory=dict)
    skipped_reason: str | None = None
    errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_run(
    con: Connection,
    summary: TriggerSummary,
    *,
    run_id: str,
    provider: str,
    started: datetime,
) -> None:
    """Write the trigger's row in ``nudge.runs``; never fail the push because of it."""
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
                **summary.counts(),
                "hold_reason": summary.hold_reason,
                "errors": summary.errors,
            },
        )
    except DATABASE_ERRORS:
        # The run log must never turn a finished push into a failed step (and a retry).
        log.exception("could not record the run of trigger %s in nudge.runs", summary.trigger)
