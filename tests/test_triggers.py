"""Trigger discovery from the dbt manifest, and its error messages."""

from __future__ import annotations

from typing import Any

import pytest

from dagster_project.dbt_assets import nudge_dbt_project
from dagster_project.triggers import TriggerDefinitionError, triggers_from_manifest


def _node(name: str, nudge: Any, path: str = "models/audience/x.sql") -> dict[str, Any]:
    return {
        "resource_type": "model",
        "name": name,
        "schema": "audience",
        "alias": name,
        "original_file_path": path,
        "config": {"meta": {"nudge": nudge}},
    }


def test_the_project_declares_the_three_default_triggers() -> None:
    specs = triggers_from_manifest(nudge_dbt_project.manifest_path)
    assert [(s.name, s.step, s.relation) for s in specs] == [
        ("abandoned_cart", "reminder", "audience.abandoned_cart_eligibility"),
        ("birthday", "greeting", "audience.birthday_eligibility"),
        ("inactivity", "we_miss_you", "audience.inactivity_eligibility"),
    ]


def test_models_without_nudge_meta_are_not_triggers() -> None:
    manifest = {
        "nodes": {
            "m": {"resource_type": "model", "name": "m", "schema": "s", "config": {"meta": {}}}
        }
    }
    assert triggers_from_manifest(manifest) == []


def test_an_invalid_step_names_the_file_and_field() -> None:
    manifest = {
        "nodes": {"a": _node("a", {"trigger": "welcome", "step": "Day 1"}, "models/audience/a.sql")}
    }
    with pytest.raises(
        TriggerDefinitionError, match=r"models/audience/a\.sql: config\.meta\.nudge\.step"
    ):
        triggers_from_manifest(manifest)


def test_an_unknown_category_is_rejected() -> None:
    manifest = {"nodes": {"a": _node("a", {"trigger": "t", "step": "s", "category": "promo"})}}
    with pytest.raises(TriggerDefinitionError, match="category must be one of"):
        triggers_from_manifest(manifest)


def test_a_trigger_declared_twice_is_rejected() -> None:
    nudge = {"trigger": "t", "step": "s"}
    manifest = {"nodes": {"a": _node("a", nudge), "b": _node("b", nudge)}}
    with pytest.raises(TriggerDefinitionError, match="declared by both a and b"):
        triggers_from_manifest(manifest)
