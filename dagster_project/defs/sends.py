"""One send asset per trigger, built from the dbt manifest (no Python per trigger).

Each asset reports its counts as metadata and four asset checks, so a held or unhealthy
trigger is red in the Dagster UI even though the run itself succeeded:

* ``mass_send_guard`` / ``source_freshness``: fails when a guard held the trigger's sends;
* ``no_duplicate_deliveries``: no send_id was ever settled ``sent`` twice (the history table);
* ``failure_rate``: this run's failed + unknown share of attempted sends is under the limit.
"""

import logging
from collections.abc import Sequence

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from .dispatch import TriggerSummary, dispatch_trigger
from .rendering import Renderer
from .resources import EspResource, SendPolicyResource, TickResource, WarehouseResource
from .triggers import ProjectRelations, TriggerSpec

log = logging.getLogger(__name__)

SEND_GROUP = "sends"


def send_asset_key(spec: TriggerSpec) -> AssetKey:
    return AssetKey(["nudge", f"send_{spec.name}"])


def _check_specs(spec: TriggerSpec) -> list[AssetCheckSpec]:
    key = send_asset_key(spec)
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
    if spec.fires_on_absence:
        specs.append(
            AssetCheckSpec(
                "source_freshness",
                asset=key,
                description="Fails when this absence trigger was held because events are stale.",
            )
        )
    return specs


def _check_results(
    spec: TriggerSpec, summary: TriggerSummary, failure_rate_max: float
) -> list[AssetCheckResult]:
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


def build_send_asset(
    spec: TriggerSpec,
    eligibility_key: AssetKey,
    relations: ProjectRelations | None = None,
    competitors: Sequence[tuple[TriggerSpec, AssetKey]] = (),
) -> AssetsDefinition:
    """The asset that pushes one trigger's due emails after its eligibility model is built.

    ``competitors``: the higher-priority marketing triggers and their eligibility assets; their
    due sends take a customer's frequency-cap slot first, so their tables must be built first.
    """
    relations = relations or ProjectRelations()

    @asset(
        key=send_asset_key(spec),
        deps=[eligibility_key, *(key for _, key in competitors)],
        group_name=SEND_GROUP,
        kinds={"email", "duckdb"},
        description=(
            f"Sends the steps ({spec.step_names}) of trigger `{spec.name}` as they fall due in "
            f"`{spec.relation}`, each exactly once. {spec.description}"
        ),
        metadata={
            "nudge/trigger": spec.name,
            "nudge/eligibility": spec.relation,
            "nudge/category": spec.category,
            "nudge/priority": spec.priority,
            "nudge/steps": spec.step_names,
            "nudge/definition": spec.source_file,
        },
        check_specs=_check_specs(spec),
    )
    def _send(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        esp: EspResource,
        tick: TickResource,
        send_policy: SendPolicyResource,
    ) -> MaterializeResult:
        as_of = tick.resolve(context)
        tick.check_not_late(as_of)
        policy = send_policy.policy(esp.batch_size)
        provider = esp.build()
        try:
            with warehouse.locked(), warehouse.connection() as con:
                summary = dispatch_trigger(
                    con,
                    spec,
                    provider=provider,
                    renderer=Renderer(),
                    as_of=as_of,
                    run_id=context.run_id,
                    from_email=esp.from_email,
                    policy=policy,
                    relations=relations,
                    consent_cutoff=tick.consent_cutoff(as_of),
                    # A paused trigger sends nothing, so it takes no one's cap slot.
                    competitors=[
                        other.relation
                        for other, _ in competitors
                        if other.name not in policy.paused
                    ],
                )
        finally:
            provider.close()
        if summary.skipped_reason:
            context.log.warning(summary.skipped_reason)
        if summary.hold_reason:
            context.log.error(
                f"{spec.name}: {summary.held} new sends HELD: {summary.hold_reason}. "
                f"Check the trigger, then release with `nudge run --approve {spec.name}`."
            )
        # Counts only: no addresses or names in metadata (errors name send_ids, not people).
        return MaterializeResult(
            metadata={
                "as_of": MetadataValue.text(summary.as_of),
                "provider": MetadataValue.text(provider.name),
                "outcome": MetadataValue.text(summary.outcome),
                "candidates": summary.candidates,
                "eligible": summary.eligible,
                "already_sent": summary.already_sent,
                "new": summary.new,
                "resumed": summary.resumed,
                "sent": summary.sent,
                "failed": summary.failed,
                "unknown": summary.unknown,
                "expired": summary.expired,
                "skipped": summary.skipped,
                "held": summary.held,
                "holdout": summary.holdout,
                "deferred": summary.deferred,
                "excluded_by_reason": MetadataValue.json(summary.excluded),
                "summary": MetadataValue.json(summary.to_dict()),
            },
            check_results=_check_results(spec, summary, policy.guards.failure_rate_max),
        )

    return _send
