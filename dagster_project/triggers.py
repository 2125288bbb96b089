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
    alias = node.get("alias") or node["name"]
    return TriggerSpec(
        name=nudge["trigger"],
        step=nudge["step"],
        category=category,
        model=node["name"],
        relation=f"{node['schema']}.{alias}",
        description=(node.get("description") or "").strip(),
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
