"""Triggers are declared in dbt, not in Python.

A model whose YAML has ``config.meta.nudge`` (the sequence: steps, exit, re-entry, category)
is a trigger: nudge reads the dbt manifest and creates one send asset for it. Adding a trigger
needs its entries SQL, its YAML, a one-line eligibility model and its templates; no Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError
from .sequences import (
    NAME,
    SequenceDefinition,
    Step,
    TriggerDefinitionError,
    parse_sequence,
)

# Local hours [start, end) when marketing mail waits, unless the dbt vars say otherwise.
DEFAULT_QUIET_HOURS = (21, 8)

# Columns the sequence engine adds to every eligibility row: an entries model must not
# output them (dbt/macros/sequence.sql).
ENGINE_COLUMNS = frozenset(
    {
        "send_id", "trigger", "step", "step_index", "variant", "template", "category",
        "priority", "reentry_key", "email", "first_name", "timezone", "scheduled_at", "due_at",
        "expires_at", "is_eligible", "exclusion_reason", "rule_exclusion_reason",
        "consent_status", "ledger_status", "previous_step_status", "sent_steps", "as_of",
        "send_time",
    }
)  # fmt: skip

__all__ = [
    "ProjectRelations",
    "TriggerDefinitionError",
    "TriggerSpec",
    "find_trigger",
    "project_triggers",
    "triggers_from_manifest",
]


@dataclass(frozen=True)
class TriggerSpec:
    """One trigger: its entries model, its YAML sequence and its eligibility table."""

    name: str
    model: str  # the eligibility model, e.g. abandoned_cart_eligibility
    relation: str  # its table, e.g. audience.abandoned_cart_eligibility
    sequence: SequenceDefinition = field(default_factory=lambda: _single_step())
    description: str = ""
    # The consent list re-checked at push time (marketing triggers only).
    consent_list: str = "marketing"
    # The list whose latest status `suppressed` blocks every email (dbt var suppression_list).
    suppression_list: str = "suppression"
    # Local hours [start, end) when marketing mail waits (dbt vars quiet_hours_start/_end).
    quiet_hours_window: tuple[int, int] = DEFAULT_QUIET_HOURS
    source_file: str = ""  # the YAML that declares it, for error messages

    @property
    def category(self) -> str:
        return self.sequence.category

    @property
    def priority(self) -> int:
        return self.sequence.priority

    @property
    def fires_on_absence(self) -> bool:
        return self.sequence.fires_on_absence

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.sequence.steps

    @property
    def step_names(self) -> str:
        return ", ".join(s.name for s in self.steps)

    @property
    def templates(self) -> tuple[str, ...]:
        return tuple(t for s in self.steps for t in s.templates)


def higher_priority(spec: TriggerSpec, triggers: Sequence[TriggerSpec]) -> list[TriggerSpec]:
    """The marketing triggers whose due sends take a customer's frequency-cap slot before
    ``spec``'s: a higher priority, ties broken by name. None for a transactional trigger: caps
    do not apply to it, so it waits for no marketing table (the transactional job builds none)."""
    if spec.category != "marketing":
        return []
    return [
        other
        for other in triggers
        if other.name != spec.name
        and other.category == "marketing"
        and (other.priority, other.name) > (spec.priority, spec.name)
    ]


def _single_step() -> SequenceDefinition:
    return parse_sequence("trigger", {"steps": [{"name": "step", "delay": "0h"}]}, "<default>")


@dataclass(frozen=True)
class ProjectRelations:
    """Relations of the dbt project the send step reads besides a trigger's own table."""

    # Consent changes of every source, not limited to as_of: the push-time consent re-check.
    subscriptions: str = "intermediate.int_consent__changes"
    # Events up to as_of: the source freshness guard.
    events: str = "staging.stg_raw__events"


def _where(node: Mapping[str, Any]) -> str:
    """The YAML file that declares a model's meta (its patch), else its SQL file."""
    patch = node.get("patch_path") or ""
    if "://" in patch:
        patch = patch.split("://", 1)[1]
    patch = patch.removeprefix("../")
    return patch or node.get("original_file_path") or node.get("name", "?")


def _window(value: Any) -> tuple[int, int]:
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return DEFAULT_QUIET_HOURS


def _meta(node: Mapping[str, Any]) -> Mapping[str, Any]:
    return (node.get("config") or {}).get("meta") or node.get("meta") or {}


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
        and node.get("name") in ("int_consent__changes", "stg_raw__events")
    }
    defaults = ProjectRelations()
    return ProjectRelations(
        subscriptions=found.get("int_consent__changes", defaults.subscriptions),
        events=found.get("stg_raw__events", defaults.events),
    )


def triggers_from_manifest(manifest: Mapping[str, Any] | Path) -> list[TriggerSpec]:
    """Every trigger of a dbt manifest, sorted by name.

    A trigger is a model whose YAML has ``config.meta.nudge`` (its entries and sequence) plus
    the eligibility model that calls ``sequence_eligibility('<trigger>')``. Every definition is
    validated here, when Dagster loads, so a bad YAML fails before any tick.
    """
    data: Mapping[str, Any] = (
        json.loads(manifest.read_text()) if isinstance(manifest, Path) else manifest
    )
    models = [n for n in data.get("nodes", {}).values() if n.get("resource_type") == "model"]
    eligibility: dict[str, Mapping[str, Any]] = {}
    for node in models:
        marker = _meta(node).get("nudge_eligibility")
        if isinstance(marker, Mapping) and marker.get("trigger"):
            trigger = str(marker["trigger"])
            if trigger in eligibility:
                raise TriggerDefinitionError(
                    f"trigger {trigger!r} has two eligibility models: "
                    f"{eligibility[trigger]['name']} and {node['name']}"
                )
            eligibility[trigger] = node
    specs: list[TriggerSpec] = []
    for node in models:
        meta = _meta(node).get("nudge")
        if meta is None:
            continue
        where = _where(node)
        name = node["name"]
        if not NAME.match(name):
            raise TriggerDefinitionError(
                f"{where}: the trigger model name {name!r} must be a lowercase identifier"
            )
        sequence = parse_sequence(name, meta, where)
        reserved = sorted(set(node.get("columns") or {}) & ENGINE_COLUMNS)
        if reserved:
            raise TriggerDefinitionError(
                f"{where}: model {name} outputs {', '.join(reserved)}, which the sequence "
                "engine adds itself; rename the column (or use config.meta.nudge.reentry_key)"
            )
        target = eligibility.get(name)
        if target is None:
            raise TriggerDefinitionError(
                f"{where}: trigger {name!r} has no eligibility model; add "
                f"models/audience/{name}_eligibility.sql containing "
                f"{{{{ sequence_eligibility('{name}') }}}}"
            )
        marker = _meta(target)["nudge_eligibility"]
        specs.append(
            TriggerSpec(
                name=name,
                model=target["name"],
                relation=_relation(target),
                sequence=sequence,
                description=(node.get("description") or "").strip(),
                consent_list=str(marker.get("consent_list") or "marketing"),
                suppression_list=str(marker.get("suppression_list") or "suppression"),
                quiet_hours_window=_window(marker.get("quiet_hours")),
                source_file=where,
            )
        )
    orphans = sorted(set(eligibility) - {s.name for s in specs})
    if orphans:
        raise TriggerDefinitionError(
            f"{eligibility[orphans[0]].get('original_file_path')}: sequence_eligibility"
            f"('{orphans[0]}') names no trigger model with config.meta.nudge in its YAML"
        )
    return sorted(specs, key=lambda s: s.name)


def project_triggers() -> tuple[list[TriggerSpec], ProjectRelations]:
    """This project's triggers and relations, from the dbt manifest (parsed if stale)."""
    from .dbt_runner import ensure_manifest

    manifest = ensure_manifest()
    return triggers_from_manifest(manifest), project_relations(manifest)


def find_trigger(triggers: Sequence[TriggerSpec], name: str) -> TriggerSpec:
    """The trigger called ``name``, or a :class:`ConfigError` listing the ones there are."""
    for spec in triggers:
        if spec.name == name:
            return spec
    raise ConfigError(
        f"no trigger named {name!r}; the project has: {', '.join(s.name for s in triggers)}"
    )
