"""The single root of nudge's Dagster code location (``dg dev``, ``workspace.yaml``).

The definitions are built when Dagster loads the code location, not when the package is
imported: building them reads the dbt manifest (parsing the project first if a model changed)
and makes one send asset per trigger it declares.
"""

from __future__ import annotations

from dagster import Definitions, definitions
from dagster_dbt import get_asset_key_for_model

from .config import Settings
from .dbt_runner import ensure_manifest
from .defs.consent import consent_changes, email_events
from .defs.dbt import build_dbt_assets, build_reporting_assets, dbt_project, dbt_resource
from .defs.resources import resources_from_settings
from .defs.schedules import (
    daily_reporting,
    hourly_tick,
    nudge_reporting_job,
    nudge_tick_job,
    transactional_job,
    transactional_schedule,
)
from .defs.sends import build_send_asset, send_asset_key
from .triggers import higher_priority, project_relations, triggers_from_manifest


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Every asset, check, job, schedule and resource of nudge, for ``settings``
    (default: the ``NUDGE_*`` environment)."""
    settings = settings or Settings.from_env()
    manifest = ensure_manifest()
    project = dbt_project()
    dbt_models = build_dbt_assets(project, manifest)
    triggers = triggers_from_manifest(manifest)
    relations = project_relations(manifest)
    eligibility = {
        spec.name: get_asset_key_for_model([dbt_models], spec.model) for spec in triggers
    }
    send_assets = [
        build_send_asset(
            spec,
            eligibility[spec.name],
            relations,
            competitors=[
                (other, eligibility[other.name]) for other in higher_priority(spec, triggers)
            ],
        )
        for spec in triggers
    ]
    reporting = build_reporting_assets(
        project, manifest, [send_asset_key(spec) for spec in triggers]
    )
    jobs: list = [nudge_tick_job, nudge_reporting_job]
    schedules: list = [hourly_tick, daily_reporting]
    transactional = [send_asset_key(s) for s in triggers if s.category == "transactional"]
    if transactional:  # a project may have none: then there is nothing to run every 5 minutes
        job = transactional_job(transactional)
        jobs.append(job)
        schedules.append(transactional_schedule(job))
    return Definitions(
        assets=[consent_changes, email_events, dbt_models, *send_assets, reporting],
        jobs=jobs,
        schedules=schedules,
        resources={"dbt": dbt_resource(project), **resources_from_settings(settings)},
    )


@definitions
def defs() -> Definitions:
    """What ``dg dev``, ``dagster dev -w workspace.yaml`` and the daemon load."""
    return build_definitions()
