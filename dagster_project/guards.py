"""Guards that hold a trigger's push before anything is sent.

* **Mass-send guard.** A bug in a trigger's SQL (a dropped join, a wrong date) shows up as a
  tick that wants to mail far more people than usual. If a tick's new sends exceed an absolute
  cap, or a multiple of the trailing median of the trigger's recent ticks, the trigger's new
  sends are held: nothing is planned or sent, the run says so loudly (a failed asset check, a
  CLI message and exit code), and an explicit approval releases it
  (``nudge run --approve TRIGGER``).
* **Source freshness guard.** Triggers that fire on the *absence* of activity (no order since
  the cart, no visit for 90 days) read a broken ingestion pipeline as "everybody lapsed". When
  the newest event is older than a limit, those triggers are held whole.

Both are pure decisions over numbers; ``dispatch.py`` gathers the numbers and acts.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class GuardPolicy:
    """Thresholds of the guards (``NUDGE_MASS_SEND_*``, ``NUDGE_FRESHNESS_MAX_HOURS``)."""

    # Held when a tick's new sends exceed this, whatever the history.
    mass_send_max: int = 5000
    # ...or exceed this multiple of the median of the trigger's recent busy ticks.
    mass_send_multiple: float = 10.0
    # Below this many new sends the multiple rule never holds (small numbers are noisy).
    mass_send_min: int = 100
    # How many recent ticks with sends form the baseline; fewer than 3 means no baseline yet.
    mass_send_history_ticks: int = 24
    # Absence triggers are held when the newest event is older than this at the tick.
    freshness_max_hours: float = 24.0
    # Triggers whose hold is released for this run (``nudge run --approve``).
    approved: frozenset[str] = field(default_factory=frozenset)
    # The failure-rate asset check fails above this share of failed attempts.
    failure_rate_max: float = 0.05


MIN_BASELINE_TICKS = 3


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


def freshness_hold(
    trigger: str, newest_event: datetime | None, as_of: datetime, policy: GuardPolicy
) -> str | None:
    """Why an absence trigger must be held because events look stale, or ``None``.

    An approval releases this hold too: the operator has checked the pipeline.
    """
    if trigger in policy.approved:
        return None
    if newest_event is None:
        return "no events at all at this tick: is the events pipeline loading?"
    age_hours = (as_of - newest_event).total_seconds() / 3600
    if age_hours > policy.freshness_max_hours:
        return (
            f"the newest event is {age_hours:.1f} h old (limit "
            f"{policy.freshness_max_hours:g} h, NUDGE_FRESHNESS_MAX_HOURS): with stale events "
            "everyone looks inactive, so this absence trigger is held"
        )
    return None


def failure_rate(sent: int, failed: int, unknown: int) -> float:
    """Share of this run's attempted sends that did not go out (0 when nothing was attempted)."""
    attempted = sent + failed + unknown
    return (failed + unknown) / attempted if attempted else 0.0
