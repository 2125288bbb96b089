"""The dbt project as Dagster assets: one asset per model, dbt tests as asset checks.

Two ``@dbt_assets``: the models a tick needs (staging to eligibility), built by the hourly tick
before the sends; and the reporting models (``models/reporting``, tag ``nudge_reporting``),
downstream of the send assets and built by the daily reporting job (``schedules.py``), so the
hourly tick pays neither a second dbt start nor a rebuild over the whole send history.
Built from the manifest when the definitions load (``definitions.py``), never at import.
"""

# Dagster reads the assets' parameter annotations when they are decorated, inside the
# factories below: no `from __future__ import annotations` here (strings would not resolve).

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, AssetSpec, Output
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from .. import ledger
from ..config import DBT_PROJECT_DIR, DEFAULT_WAREHOUSE, postgres_from_url
from ..dbt_runner import (
    REPORTING_TAG,
    as_of_environment,
    build_args,
    dbt_executable,
    parse_cache,
    seeded_target,
)
from ..headlines import headline_metadata
from ..incremental import rebuild_changed
from ..warehouse import check_input_contract
from .resources import TickResource, WarehouseResource

REPORTING_GROUP = "reporting"


class NudgeDbtTranslator(DagsterDbtTranslator):
    """Asset groups follow the model folders; sources keep their ``raw/<table>`` keys.

    ``downstream_of``: asset keys every reporting model depends on besides its refs (the send
    assets write the ledger they read), so the lineage shows reports after the sends.
    """

    def __init__(self, *args: Any, downstream_of: Sequence[AssetKey] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._downstream_of = list(downstream_of)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        # The intermediate models only reports read are built with them, so they are grouped
        # with them: the tick job leaves the whole group to the reporting job.
        if REPORTING_TAG in (dbt_resource_props.get("tags") or []):
            return REPORTING_GROUP
        if dbt_resource_props.get("resource_type") == "model":
            fqn = dbt_resource_props.get("fqn", [])
            return fqn[1] if len(fqn) > 2 else "models"
        return super().get_group_name(dbt_resource_props)

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest.get("nodes", {}).get(unique_id, {})
        if self._downstream_of and REPORTING_TAG in (node.get("tags") or []):
            spec = spec.merge_attributes(deps=self._downstream_of)
        return spec


def dbt_project() -> DbtProject:
    """nudge's dbt project; its manifest is kept fresh by ``dbt_runner.ensure_manifest``."""
    return DbtProject(project_dir=DBT_PROJECT_DIR)


class NudgeDbtCliResource(DbtCliResource):
    """dagster-dbt's dbt resource, without the two dbt start-ups it adds to every command.

    Before each dbt command, ``DbtCliResource`` runs ``dbt --version`` in a subprocess (a second
    dbt start-up, plus dbt's request to PyPI for the latest version: 3 to 6 s) and loads a dbt
    adapter into this process (about 2.4 s), which it uses only to fetch row counts or column
    metadata. nudge asks for neither, and its dbt is the one installed next to this
    interpreter, so the version is read from the installed package. That is the issue's "one
    dbt start-up per tick". ``tests/defs/test_definitions.py`` checks that no ``dbt --version``
    runs; every end-to-end test's tick builds through this resource.
    """

    @cached_property
    def _cli_version(self) -> Any:
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            from packaging.version import Version

            return Version(installed_version("dbt-core"))
        return super()._cli_version  # another dbt: ask it

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None


def dbt_resource(project: DbtProject) -> DbtCliResource:
    # The dbt next to this interpreter: a virtualenv's bin/ need not be on PATH.
    return NudgeDbtCliResource(
        project_dir=os.fspath(project.project_dir), dbt_executable=dbt_executable()
    )


class WarehouseMismatchError(RuntimeError):
    """dbt would build a different warehouse file than the send steps read."""


def build_dbt_assets(project: DbtProject, manifest: Path) -> AssetsDefinition:
    """The ``@dbt_assets`` of the project: one ``dbt build`` per tick, at the tick's as_of."""

    @dbt_assets(
        manifest=manifest,
        project=project,
        exclude=f"tag:{REPORTING_TAG}",
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
        _check_same_warehouse(warehouse)
        with warehouse.locked():
            with warehouse.connection() as con:
                check_input_contract(con, warehouse.label)
                # The eligibility models read the ledger as a source, so it must exist first.
                ledger.ensure_ledger(con)
                for relation in rebuild_changed(con, manifest):
                    context.log.info(f"{relation}: its code changed, dbt builds it in full")
            if tick.full_refresh:
                context.log.info("full refresh: the incremental models are rebuilt in full")
            with _seeded_target(context, warehouse) as target:
                with as_of_environment(as_of.isoformat(), warehouse.dbt_env()):
                    invocation = dbt.cli(
                        build_args(full_refresh=tick.full_refresh),
                        context=context,
                        target_path=target,
                    )
                yield from invocation.stream()
        _discard_target(invocation)

    return nudge_dbt_models


def build_reporting_assets(
    project: DbtProject, manifest: Path, sends: Sequence[AssetKey]
) -> AssetsDefinition:
    """The reporting models, after the send assets: headline figures as asset metadata."""

    @dbt_assets(
        manifest=manifest,
        project=project,
        name="nudge_dbt_reporting",
        select=f"tag:{REPORTING_TAG}",
        dagster_dbt_translator=NudgeDbtTranslator(
            settings=DagsterDbtTranslatorSettings(enable_asset_checks=True),
            downstream_of=sends,
        ),
    )
    def nudge_dbt_reporting(
        context: AssetExecutionContext,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
        tick: TickResource,
    ) -> Iterator[Any]:
        as_of = tick.resolve(context)
        context.log.info(f"dbt build of the reporting models for as_of {as_of.isoformat()}")
        _check_same_warehouse(warehouse)
        with warehouse.locked():
            with warehouse.connection() as con:
                ledger.ensure_ledger(con)
            # Held back until the build is over: the headline tables read every model's result.
            # A failing model or test must not cost the others their materializations, so the
            # error is raised after they are reported.
            with _seeded_target(context, warehouse) as target:
                with as_of_environment(as_of.isoformat(), warehouse.dbt_env()):
                    invocation = dbt.cli(
                        build_args(), context=context, raise_on_error=False, target_path=target
                    )
                events = list(invocation.stream())
            with warehouse.connection() as con:
                headlines = headline_metadata(con)
        for event in events:
            if isinstance(event, Output):
                model = context.asset_key_for_output(event.output_name).path[-1]
                if model in headlines:
                    event = event.with_metadata({**event.metadata, **headlines[model]})
            yield event
        if not invocation.is_successful():
            raise invocation.get_error() or RuntimeError("dbt build of the reporting models failed")
        _discard_target(invocation)

    return nudge_dbt_reporting


def _seeded_target(
    context: AssetExecutionContext, warehouse: WarehouseResource
) -> contextlib.AbstractContextManager[Path]:
    """This build's own target folder (named as dagster-dbt names them), seeded with the
    warehouse's saved parse (``dbt_runner.seeded_target``; dagster-dbt copies the project's
    shared one only into a folder that has none)."""
    name = f"{context.op_execution_context.op.name}-{context.run.run_id[:7]}"
    return seeded_target(name, parse_cache(warehouse.file))


def _discard_target(invocation: DbtCliInvocation) -> None:
    """Remove a successful build's own target folder (``dbt/target/<asset>-<run>-<hash>``).

    dagster-dbt gives every invocation a folder of its own (compiled SQL, manifest, logs: about
    10 MB) and never removes it: at one hourly and eleven 5-minute runs an hour that is gigabytes
    a day. Dagster has recorded everything in it by now; a failed build keeps its folder, whose
    dbt.log and compiled SQL are what one debugs it with.
    """
    shutil.rmtree(invocation.target_path, ignore_errors=True)


def _check_same_warehouse(warehouse: WarehouseResource) -> None:
    # dbt reads the warehouse from NUDGE_WAREHOUSE (profiles.yml), which the resources were
    # built from; run config pointing the warehouse resource elsewhere would make dbt and
    # the send steps look at two different files.
    postgres = warehouse.postgres
    if postgres is not None:
        built = postgres_from_url(os.environ.get("NUDGE_WAREHOUSE") or "")
        if built is None or not built.same_database(postgres):
            raise WarehouseMismatchError(
                f"the warehouse resource is {warehouse.label} but NUDGE_WAREHOUSE says "
                "otherwise; set NUDGE_WAREHOUSE instead of the resource's run config"
            )
        return
    built_by_dbt = Path(os.environ.get("NUDGE_WAREHOUSE") or DEFAULT_WAREHOUSE).resolve()
    if built_by_dbt != warehouse.file:
        raise WarehouseMismatchError(
            f"dbt builds {built_by_dbt} (NUDGE_WAREHOUSE) but the warehouse resource is "
            f"{warehouse.file}; set NUDGE_WAREHOUSE instead of the resource's run config"
        )
