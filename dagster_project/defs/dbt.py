"""The dbt project as Dagster assets (one asset per model, dbt tests as asset checks)."""

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
from dagster import AssetExecutionContext
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from . import ledger
from .config import DBT_PROJECT_DIR, MODELS_DIR
from .resources import TickResource, WarehouseResource

nudge_dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
nudge_dbt_project.prepare_if_dev()


def _newest_source_mtime() -> float:
    paths = [*MODELS_DIR.rglob("*"), *(DBT_PROJECT_DIR / "macros").rglob("*")]
    paths.append(DBT_PROJECT_DIR / "dbt_project.yml")
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def ensure_manifest(project: DbtProject = nudge_dbt_project) -> Path:
    """Parse the dbt project when its manifest is missing or older than the models.

    ``dagster dev`` does this through ``prepare_if_dev``; the CLI, tests and CI load the
    definitions directly, and a stale manifest would silently miss a newly added trigger.
    """
    manifest = project.manifest_path
    if not manifest.exists() or manifest.stat().st_mtime < _newest_source_mtime():
        subprocess.run(
            [dbt_executable(), "parse", "--quiet"],
            cwd=project.project_dir,
            check=True,
            env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        )
    return manifest


def dbt_executable() -> str:
    # The dbt next to this interpreter, so a venv's dbt is used even when it is not on PATH.
    import sys

    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


class NudgeDbtTranslator(DagsterDbtTranslator):
    """Asset groups follow the model folders; sources keep their ``raw/<table>`` keys."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props.get("resource_type") == "model":
            fqn = dbt_resource_props.get("fqn", [])
            return fqn[1] if len(fqn) > 2 else "models"
        return super().get_group_name(dbt_resource_props)


ensure_manifest()

DBT_TRANSLATOR = NudgeDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


RAW_TABLES = ("customers", "events", "subscriptions")


class MissingInputError(RuntimeError):
    """The warehouse lacks the raw tables of the input contract."""


def check_input_contract(con: duckdb.DuckDBPyConnection, warehouse: Path) -> None:
    """Fail with a clear message, before dbt, when the raw tables are not there."""
    present = {
        row[0]
        for row in con.execute(
            "select table_name from duckdb_tables() where schema_name = 'raw' "
            "union all select view_name from duckdb_views() where schema_name = 'raw'"
        ).fetchall()
    }
    missing = [f"raw.{t}" for t in RAW_TABLES if t not in present]
    if missing:
        raise MissingInputError(
            f"{warehouse} has no {', '.join(missing)}. Load your data as described in the "
            "README's input contract, point NUDGE_WAREHOUSE at the right file, or run "
            "`nudge demo` to generate a demo warehouse."
        )


def dbt_build_args(as_of: str) -> list[str]:
    """One ``dbt build`` per tick. Unit tests run in CI, not on every production tick."""
    return [
        "build",
        "--vars",
        json.dumps({"as_of": as_of}),
        "--exclude-resource-type",
        "unit_test",
    ]


@dbt_assets(
    manifest=nudge_dbt_project.manifest_path,
    project=nudge_dbt_project,
    dagster_dbt_translator=DBT_TRANSLATOR,
)
def nudge_dbt_models(
    context: AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    tick: TickResource,
) -> Iterator[Any]:
    as_of = tick.resolve(context)
    context.log.info(f"dbt build for as_of {as_of.isoformat()}")
    # dbt reads the warehouse path from the same variable the profile uses; pin it to this
    # resource's file so dbt and the send assets can never look at two different warehouses.
    os.environ["NUDGE_WAREHOUSE"] = str(warehouse.file)
    with warehouse.locked():
        with warehouse.connection() as con:
            check_input_contract(con, warehouse.file)
            # The eligibility models read the ledger as a source, so it must exist first.
            ledger.ensure_ledger(con)
        yield from dbt.cli(dbt_build_args(as_of.isoformat()), context=context).stream()
