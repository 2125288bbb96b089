"""The single root of nudge's Dagster code location (`dagster dev -w workspace.yaml`)."""

from __future__ import annotations

from dagster import Definitions
from dagster_dbt import DbtCliResource, get_asset_key_for_model

from .config import Settings
from .dbt_assets import dbt_executable, nudge_dbt_models, nudge_dbt_project
from .resources import resources_from_settings
from .schedules import hourly_tick, nudge_tick_job
from .send_assets import build_send_asset
from .triggers import higher_priority, project_relations, triggers_from_manifest

TRIGGERS = triggers_from_manifest(nudge_dbt_project.manifest_path)
RELATIONS = project_relations(nudge_dbt_project.manifest_path)

ELIGIBILITY_KEYS = {
    spec.name: get_asset_key_for_model([nudge_dbt_models], spec.model) for spec in TRIGGERS
}

send_assets = [
    build_send_asset(
        spec,
        ELIGIBILITY_KEYS[spec.name],
        RELATIONS,
        competitors=[
            (other, ELIGIBILITY_KEYS[other.name]) for other in higher_priority(spec, TRIGGERS)
        ],
    )
    for spec in TRIGGERS
]


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings.from_env()
    return Definitions(
        assets=[nudge_dbt_models, *send_assets],
        jobs=[nudge_tick_job],
        schedules=[hourly_tick],
        resources={
            "dbt": DbtCliResource(project_dir=nudge_dbt_project, dbt_executable=dbt_executable()),
            **resources_from_settings(settings),
        },
    )


defs = build_definitions()
