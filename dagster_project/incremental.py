"""Incremental models across releases: rebuilt in full when their code changes.

The incremental dbt models (``base_raw__events`` and the summaries of the event history) keep
rows that earlier ticks computed. A release that changes a model's SQL, an upstream model, a
macro or a var would otherwise leave those rows computed the old way for good (a changed column
only makes dbt fail, a changed rule changes nothing). So before each dbt build the models whose
fingerprint differs from the one recorded in ``nudge.incremental_models`` are dropped, and dbt
builds them in full. A warehouse from before a model was incremental has no record: its old
tables are dropped the same way. The new fingerprint is recorded at once; if the build then
fails, the table is simply absent, which dbt also builds in full.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import DBT_PROJECT_DIR
from .warehouse import Connection, one, quote_relation, sql_for


def fingerprints(manifest: Mapping[str, Any], schema_prefix: str = "") -> dict[str, str]:
    """``schema.table`` of every incremental model -> a hash of the code it is built with: its
    SQL and its upstream models', every macro of the project, and ``dbt_project.yml``."""
    nodes: Mapping[str, Any] = manifest["nodes"]
    project = manifest["metadata"].get("project_name", "nudge")
    # Every macro of the project: they are few, and a dispatched variant is hard to trace.
    macros = sorted(
        m["macro_sql"] for m in manifest["macros"].values() if m.get("package_name") == project
    )
    # Its vars and model configs.
    project_file = (DBT_PROJECT_DIR / "dbt_project.yml").read_text()

    def upstream(uid: str, seen: set[str]) -> None:
        for parent in nodes.get(uid, {}).get("depends_on", {}).get("nodes", []):
            if parent in nodes and parent not in seen:
                seen.add(parent)
                upstream(parent, seen)

    found = {}
    for uid, node in nodes.items():
        if node.get("resource_type") != "model" or node["config"]["materialized"] != "incremental":
            continue
        models = {uid}
        upstream(uid, models)
        digest = hashlib.sha256()
        for part in [*(nodes[m]["raw_code"] for m in sorted(models)), *macros, project_file]:
            digest.update(part.encode())
            digest.update(b"\0")
        relation = f"{schema_prefix}{node['schema']}.{node.get('alias') or node['name']}"
        found[relation] = digest.hexdigest()
    return found


def rebuild_changed(
    con: Connection, manifest: Mapping[str, Any] | Path, schema_prefix: str = ""
) -> list[str]:
    """Drop the incremental models whose code changed since they were built in full (so the
    next dbt build builds them in full) and record their new fingerprints. Returns the dropped
    relations. The caller holds the warehouse lock; the ledger exists."""
    loaded = json.loads(manifest.read_text()) if isinstance(manifest, Path) else manifest
    recorded = dict(con.execute(sql_for(con, "incremental/recorded")).fetchall())
    dropped = []
    for relation, fingerprint in sorted(fingerprints(loaded, schema_prefix).items()):
        if recorded.get(relation) == fingerprint:
            continue
        schema, name = relation.split(".")
        row = one(con, sql_for(con, "incremental/exists"), {"schema": schema, "name": name})
        if row and row[0]:
            con.execute(sql_for(con, "incremental/drop").format(relation=quote_relation(relation)))
            dropped.append(relation)
        con.execute(
            sql_for(con, "incremental/record"), {"relation": relation, "fingerprint": fingerprint}
        )
    return dropped
