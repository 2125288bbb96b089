"""The first steps of every tick: drain ``nudge serve``'s landing store (consent changes,
provider events) into the warehouse."""

# Dagster reads the asset's parameter annotations: no `from __future__ import annotations`.

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, asset

from .. import ledger
from ..consent import drain
from ..events import drain as drain_events
from .resources import ConsentResource, EspResource, WarehouseResource

CONSENT_CHANGES_KEY = AssetKey(["nudge", "consent_changes"])


@asset(
    key=CONSENT_CHANGES_KEY,
    group_name="consent",
    kinds={"sqlite", "duckdb"},
    description=(
        "Consent changes `nudge serve` acknowledged (one-click unsubscribes, the preference and "
        "confirm pages), drained from its landing store into `nudge.consent_changes` and "
        "`nudge.audit_log` before dbt builds, so every model of the tick sees them. Fails the "
        "tick first if its emails' unsubscribe links would not work (NUDGE_PUBLIC_URL, "
        "NUDGE_LINK_SECRET)."
    ),
)
def consent_changes(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    consent: ConsentResource,
    esp: EspResource,
) -> MaterializeResult:
    # The tick's first step, so a tick whose emails would carry links nobody can use fails
    # here, before dbt (each send asset checks again: it may be materialized on its own).
    consent.links().require_for(esp.provider)
    store = consent.store()
    try:
        with warehouse.locked_connection() as con:
            ledger.ensure_ledger(con)
            drained = drain(con, store)
    finally:
        store.close()
    context.log.info(
        f"drained {drained.changes} consent changes ({drained.already_there} already there)"
    )
    return MaterializeResult(
        metadata={"drained": drained.changes, "already_there": drained.already_there}
    )


EMAIL_EVENTS_KEY = AssetKey(["nudge", "email_events"])


@asset(
    key=EMAIL_EVENTS_KEY,
    group_name="consent",
    kinds={"sqlite", "duckdb"},
    description=(
        "What the providers reported about nudge's sends (deliveries, bounces, complaints, "
        "opens, clicks, unsubscribes) through `nudge serve`'s event webhooks, drained from its "
        "landing store into `nudge.email_events` before dbt builds: the suppression, engagement "
        "and deliverability models read it."
    ),
)
def email_events(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    consent: ConsentResource,
) -> MaterializeResult:
    store = consent.store()
    try:
        with warehouse.locked_connection() as con:
            ledger.ensure_ledger(con)
            drained = drain_events(con, store)
    finally:
        store.close()
    context.log.info(
        f"drained {drained.events} provider events ({drained.already_there} already there, "
        f"{drained.unmatched} matching no send)"
    )
    return MaterializeResult(
        metadata={
            "drained": drained.events,
            "already_there": drained.already_there,
            # Events are kept, not dropped, when they name no send nudge knows: many of them
            # mean a webhook pointed at the wrong nudge, or a provider dropping custom args.
            "unmatched": drained.unmatched,
            **{f"drained_{kind}": count for kind, count in sorted(drained.by_type.items())},
        }
    )
