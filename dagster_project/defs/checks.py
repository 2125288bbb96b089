"""The checks on every send asset, so a held or unhealthy trigger is red in the Dagster UI even
though the run itself succeeded:

* ``mass_send_guard`` / ``source_freshness`` / ``deliverability``: fails when a guard held the
  trigger's sends;
* ``no_duplicate_deliveries``: no send_id was ever settled ``sent`` twice (the history table);
* ``failure_rate``: this run's failed + unknown share of attempted sends is under the limit.
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from ..runs import TriggerSummary
from ..triggers import TriggerSpec


def send_checks(spec: TriggerSpec, key: AssetKey) -> list[AssetCheckSpec]:
    """The checks a trigger's send asset declares."""
    specs = [
        AssetCheckSpec(
            "mass_send_guard",
            asset=key,
            description="Fails when this tick's new sends were held as abnormally many; "
            "release with `nudge run --approve TRIGGER`.",
        ),
        AssetCheckSpec(
            "no_duplicate_deliveries",
            asset=key,
            description="No send_id was ever settled as sent more than once.",
        ),
        AssetCheckSpec(
            "failure_rate",
            asset=key,
            description="Failed and unknown sends of this run stay under the threshold.",
        ),
    ]
    if spec.category == "marketing":
        specs.append(
            AssetCheckSpec(
                "deliverability",
                asset=key,
                description="Fails when this marketing trigger was held because the provider's "
                "trailing 24 h complaint or hard bounce rate passed its limit; release with "
                "`nudge run --approve TRIGGER`.",
            )
        )
    if spec.fires_on_absence:
        specs.append(
            AssetCheckSpec(
                "source_freshness",
                asset=key,
                description="Fails when this absence trigger was held because events are stale.",
            )
        )
    return specs


def send_check_results(
    spec: TriggerSpec, summary: TriggerSummary, failure_rate_max: float
) -> list[AssetCheckResult]:
    """How this run fared against each of :func:`send_checks`."""
    held_by_freshness = summary.held_by == "source_freshness"
    held_by_mass = summary.held_by == "mass_send"
    results = [
        AssetCheckResult(
            check_name="mass_send_guard",
            passed=not held_by_mass,
            severity=AssetCheckSeverity.ERROR,
            description=summary.hold_reason if held_by_mass else None,
            metadata={"held": summary.held if held_by_mass else 0, "new": summary.new},
        ),
        AssetCheckResult(
            check_name="no_duplicate_deliveries",
            passed=summary.duplicate_deliveries == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"duplicate_send_ids": summary.duplicate_deliveries},
        ),
        AssetCheckResult(
            check_name="failure_rate",
            passed=summary.failure_rate <= failure_rate_max,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "failure_rate": summary.failure_rate,
                "threshold": failure_rate_max,
                "sent": summary.sent,
                "failed": summary.failed,
                "unknown": summary.unknown,
            },
        ),
    ]
    if spec.category == "marketing":
        held = summary.held_by == "deliverability"
        results.append(
            AssetCheckResult(
                check_name="deliverability",
                passed=not held,
                severity=AssetCheckSeverity.ERROR,
                description=summary.hold_reason if held else None,
                metadata={"held": summary.held if held else 0},
            )
        )
    if spec.fires_on_absence:
        results.append(
            AssetCheckResult(
                check_name="source_freshness",
                passed=not held_by_freshness,
                severity=AssetCheckSeverity.ERROR,
                description=summary.hold_reason if held_by_freshness else None,
                metadata={"held": summary.held if held_by_freshness else 0},
            )
        )
    return results
