"""One send asset per trigger, built from the dbt manifest (no Python per trigger)."""

# Dagster reads the assets' parameter annotations when they are decorated, inside the
# factories below: no `from __future__ import annotations` here (strings would not resolve).

from collections.abc import Sequence

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from .. import failpoints, ledger
from ..dispatch import dispatch_trigger
from ..rendering import Renderer
from ..triggers import ProjectRelations, TriggerSpec
from .checks import send_check_results, send_checks
from .resources import (
    ConsentResource,
    EspResource,
    PolicyResource,
    TickResource,
    WarehouseResource,
)

SEND_GROUP = "sends"


def send_asset_key(spec: TriggerSpec) -> AssetKey:
    return AssetKey(["nudge", f"send_{spec.name}"])


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
    key = send_asset_key(spec)

    @asset(
        key=key,
        deps=[eligibility_key, *(other for _, other in competitors)],
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
        check_specs=send_checks(spec, key),
    )
    def _send(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        esp: EspResource,
        tick: TickResource,
        send_policy: PolicyResource,
        consent: ConsentResource,
    ) -> MaterializeResult:
        as_of = tick.resolve(context)
        tick.check_not_late(as_of)
        policy = send_policy.policy(esp.batch_size)
        links = consent.links()
        # Mail whose unsubscribe or confirm links nobody outside could use fails here, loudly,
        # before anything is planned.
        links.require_for(esp.provider)
        store = consent.store()
        provider = esp.build()
        try:
            # Between this run's dbt build and its push, the lock is free: the tests stop a
            # real run here while another one runs (the 5-minute job beside the hourly tick).
            failpoints.pause(f"before_send_step:{spec.name}")
            with warehouse.locked_connection() as con:
                # One query when the schema is current (the dbt asset applied any migration
                # first); a send asset materialized on its own after an upgrade needs it.
                ledger.ensure_ledger(con)
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
                    # Asked again before every batch: "now" moves during a long push.
                    consent_cutoff=lambda: tick.consent_cutoff(as_of),
                    # A paused trigger sends nothing, so it takes no one's cap slot.
                    competitors=[
                        other.relation
                        for other, _ in competitors
                        if other.name not in policy.paused
                    ],
                    links=links,
                    pending=store,
                )
        finally:
            provider.close()
            store.close()
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
                **summary.counts(),
                "excluded_by_reason": MetadataValue.json(summary.excluded),
                "summary": MetadataValue.json(summary.to_dict()),
            },
            check_results=send_check_results(spec, summary, policy.guards.failure_rate_max),
        )

    return _send
