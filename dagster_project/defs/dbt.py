"""The dbt project as Dagster assets: one asset per model, dbt tests as asset checks.

Built from the manifest when the definitions load (``definitions.py``), never at import.
"""

# Dagster reads the assets' parameter annotations when they are decorated, inside the
# factories below: no `from __future__ import annotations` here (strings would not resolve).

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetsDefinition
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from .. import ledger
from ..config import DBT_PROJECT_DIR, DEFAULT_WAREHOUSE
from ..dbt_runner import build_args, dbt_executable
from ..warehouse import check_input_contract
from .resources import TickResource, WarehouseResource


class NudgeDbtTranslator(DagsterDbtTranslator):
    """Asset groups follow the model folders; sources keep their ``raw/<table>`` keys."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props.get("resource_type") == "model":
            fqn = dbt_resource_props.get("fqn", [])
            return fqn[1] if len(fqn) > 2 else "models"
        return super().get_group_name(dbt_resource_props)


def dbt_project() -> DbtProject:
    """nudge's dbt project; its manifest is kept fresh by ``dbt_runner.ensure_manifest``."""
    return DbtProject(project_dir=DBT_PROJECT_DIR)


def dbt_resource(project: DbtProject) -> DbtCliResource:
    # The dbt next to this interpreter: a virtualenv's bin/ need not be on PATH.
    return DbtCliResource(project_dir=project, dbt_executable=dbt_executable())


class WarehouseMismatchError(RuntimeError):
    """dbt would build a different warehouse file than the send steps read."""


def build_dbt_assets(project: DbtProject, manifest: Path) -> AssetsDefinition:
    """The ``@dbt_assets`` of the project: one ``dbt build`` per tick, at the tick's as_of."""

    @dbt_assets(
        manifest=manifest,
        project=project,
        dagster_dbt_translator=NudgeDbtTranslator(
            settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
        ),
    )
    def nudge_dbt_models(
        context: AssetExecutionContext,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
        tick: TickResource,
    ) -> Iterator[Any]:
        as_of = tick.resolve(context)
        context.log.info(f"dbt build for as_of {as_of.isoformat()}")
        # dbt reads the warehouse from NUDGE_WAREHOUSE (profiles.yml), which the resources were
        # built from; run config pointing the warehouse resource elsewhere would make dbt and
        # the send steps look at two different files.
        built_by_dbt = Path(os.environ.get("NUDGE_WAREHOUSE") or DEFAULT_WAREHOUSE).resolve()
        if built_by_dbt != warehouse.file:
            raise WarehouseMismatchError(
                f"dbt builds {built_by_dbt} (NUDGE_WAREHOUSE) but the warehouse resource is "
                f"{warehouse.file}; set NUDGE_WAREHOUSE instead of the resource's run config"
            )
        with warehouse.locked():
            with warehouse.connection() as con:
                check_input_contract(con, warehouse.file)
                # The eligibility models read the ledger as a source, so it must exist first.
                ledger.ensure_ledger(con)
            yield from dbt.cli(build_args(as_of.isoformat()), context=context).stream()

    return nudge_dbt_models
