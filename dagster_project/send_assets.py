"""One send asset per trigger, built from the dbt manifest (no Python per trigger)."""

import logging

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from .dispatch import dispatch_trigger
from .rendering import Renderer
from .resources import EspResource, TickResource, WarehouseResource
from .triggers import TriggerSpec

log = logging.getLogger(__name__)

SEND_GROUP = "sends"


def send_asset_key(spec: TriggerSpec) -> AssetKey:
    return AssetKey(["nudge", f"send_{spec.name}"])


def build_send_asset(spec: TriggerSpec, eligibility_key: AssetKey) -> AssetsDefinition:
    """The asset that pushes one trigger's due emails after its eligibility model is built."""

    @asset(
        key=send_asset_key(spec),
        deps=[eligibility_key],
        group_name=SEND_GROUP,
        kinds={"email", "duckdb"},
        description=(
            f"Sends the `{spec.step}` email of trigger `{spec.name}` to every eligible row of "
            f"`{spec.relation}` not yet in nudge.send_ledger, exactly once. {spec.description}"
        ),
        metadata={"nudge/trigger": spec.name, "nudge/eligibility": spec.relation},
    )
    def _send(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        esp: EspResource,
        tick: TickResource,
    ) -> MaterializeResult:
        as_of = tick.resolve(context)
        tick.check_not_late(as_of)
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
                    batch_size=esp.batch_size,
                )
        finally:
            provider.close()
        if summary.skipped_reason:
            context.log.warning(summary.skipped_reason)
        # Counts only: no addresses or names in metadata (errors name send_ids, not people).
        return MaterializeResult(
            metadata={
                "as_of": MetadataValue.text(summary.as_of),
                "provider": MetadataValue.text(provider.name),
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
                "excluded_by_reason": MetadataValue.json(summary.excluded),
                "summary": MetadataValue.json(summary.to_dict()),
            }
        )

    return _send
