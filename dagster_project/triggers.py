"""Triggers are declared in dbt, not in Python.

An audience model whose YAML has ``config.meta.nudge.trigger`` is a trigger: nudge reads the
dbt manifest and creates one send asset for it. Adding a trigger therefore needs one entries
model, one eligibility model with that meta block, and its templates; no Python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
CATEGORIES = ("marketing", "transactional")


class TriggerDefinitionError(ValueError):
    """A trigger's YAML is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class TriggerSpec:
    """One trigger as declared on its eligibility model."""

    name: str
    step: str
    category: str
    model: str  # dbt model name, e.g. abandoned_cart_eligibility
    relation: str  # schema.table in the warehouse, e.g. audience.abandoned_cart_eligibility
    description: str = ""
    # Fires on missing activity (no order, no visit): held when events are stale.
    fires_on_absence: bool = False
    # The consent list re-checked at push time (marketing triggers only).
    consent_list: str = "marketing"


@dataclass(frozen=True)
class ProjectRelations:
    """Relations of the dbt project the send step reads besides a trigger's own table."""

    # Consent changes, not limited to as_of: the push-time consent re-check.
    subscriptions: str = "staging.stg_raw__subscriptions"
    # Events up to as_of: the source freshness guard.
    events: str = "staging.stg_raw__events"


def _spec_from_node(node: Mapping[str, Any]) -> TriggerSpec | None:
    meta = (node.get("config") or {}).get("meta") or node.get("meta") or {}
    nudge = meta.get("nudge")
    if nudge is None:
        return None
    where = node.get("original_file_path") or node.get("name")
    if not isinstance(nudge, Mapping):
        raise TriggerDefinitionError(f"{where}: config.meta.nudge must be a mapping")
    for field in ("trigger", "step"):
        value = nudge.get(field)
        if not isinstance(value, str) or not NAME.match(value):
            raise TriggerDefinitionError(
                f"{where}: config.meta.nudge.{field} must be a lowercase identifier "
                f"(letters, digits, underscores), got {value!r}"
            )
    category = nudge.get("category", "marketing")
    if category not in CATEGORIES:
        raise TriggerDefinitionError(
            f"{where}: config.meta.nudge.category must be one of {', '.join(CATEGORIES)}, "
            f"got {category!r}"
        )
    absence = nudge.get("fires_on_absence", False)
    if not isinstance(absence, bool):
        raise TriggerDefinitionError(
            f"{where}: config.meta.nudge.fires_on_absence must be true or false, got {absence!r}"
        )
    alias = node.get("alias") or node["name"]
    return TriggerSpec(
        name=nudge["trigger"],
        step=nudge["step"],
        category=category,
        model=node["name"],
        relation=f"{node['schema']}.{alias}",
        description=(node.get("description") or "").strip(),
        fires_on_absence=absence,
        consent_list=str(nudge.get("consent_list") or "marketing"),
    )


def _relation(node: Mapping[str, Any]) -> str:
    return f"{node['schema']}.{node.get('alias') or node['name']}"


def project_relations(manifest: Mapping[str, Any] | Path) -> ProjectRelations:
    """Where the staging views of consent changes and events live in this warehouse."""
    data: Mapping[str, Any] = (
        json.loads(manifest.read_text()) if isinstance(manifest, Path) else manifest
    )
    found = {
        node["name"]: _relation(node)
        for node in data.get("nodes", {}).values()
        if node.get("resource_type") == "model"
        and node.get("name") in ("stg_raw__subscriptions", "stg_raw__events")
    }
    defaults = ProjectRelations()
    return ProjectRelations(
        subscriptions=found.get("stg_raw__subscriptions", defaults.subscriptions),
        events=found.get("stg_raw__events", defaults.events),
    )


def triggers_from_manifest(manifest: Mapping[str, Any] | Path) -> list[TriggerSpec]:
    """Every trigger declared in a dbt manifest, sorted by name; duplicates are an error."""
    data: Mapping[str, Any] = (
        json.loads(manifest.read_text()) if isinstance(manifest, Path) else manifest
    )
    specs: dict[str, TriggerSpec] = {}
    for node in data.get("nodes", {}).values():
        if node.get("resource_type") != "model":
            continue
        spec = _spec_from_node(node)
        if spec is None:
            continue
        if spec.name in specs:
            raise TriggerDefinitionError(
                f"trigger {spec.name!r} is declared by both {specs[spec.name].model} and "
                f"{spec.model}; config.meta.nudge.trigger must be unique"
            )
        specs[spec.name] = spec
    return sorted(specs.values(), key=lambda s: s.name)
