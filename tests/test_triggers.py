"""Trigger discovery from the dbt manifest, and its error messages."""

from __future__ import annotations

from typing import Any

import pytest

from dagster_project.dbt_runner import ensure_manifest
from dagster_project.triggers import TriggerDefinitionError, triggers_from_manifest


def _trigger(name: str, nudge: Any, yml: str | None = None) -> dict[str, Any]:
    """A trigger model node: its YAML (the patch) carries config.meta.nudge."""
    return {
        "resource_type": "model",
        "name": name,
        "schema": "triggers",
        "alias": name,
        "original_file_path": f"models/triggers/{name}.sql",
        "patch_path": f"nudge://../{yml or f'models/triggers/{name}.yml'}",
        "config": {"meta": {"nudge": nudge}},
    }


def _eligibility(name: str, trigger: str) -> dict[str, Any]:
    """An eligibility model node, as ``sequence_eligibility('<trigger>')`` marks it."""
    return {
        "resource_type": "model",
        "name": name,
        "schema": "audience",
        "alias": name,
        "original_file_path": f"models/audience/{name}.sql",
        "config": {"meta": {"nudge_eligibility": {"trigger": trigger, "consent_list": "news"}}},
    }


def _steps(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "delay": f"{i}h"} for i, n in enumerate(names)]


def test_the_project_declares_the_default_triggers() -> None:
    specs = triggers_from_manifest(ensure_manifest())
    assert [(s.name, s.step_names, s.relation) for s in specs] == [
        (
            "abandoned_cart",
            "reminder, second_reminder, discount",
            "audience.abandoned_cart_eligibility",
        ),
        ("birthday", "greeting", "audience.birthday_eligibility"),
        ("browse_abandonment", "viewed_product", "audience.browse_abandonment_eligibility"),
        (
            "confirm_subscription",
            "confirm, reminder",
            "audience.confirm_subscription_eligibility",
        ),
        ("order_confirmation", "confirmation", "audience.order_confirmation_eligibility"),
        ("post_purchase_review", "review", "audience.post_purchase_review_eligibility"),
        ("re_engagement", "still_interested, last_call", "audience.re_engagement_eligibility"),
        ("shipping_notification", "shipped", "audience.shipping_notification_eligibility"),
        ("signup_anniversary", "anniversary", "audience.signup_anniversary_eligibility"),
        ("welcome", "day_0, day_3, day_9", "audience.welcome_eligibility"),
        ("win_back", "we_miss_you, incentive", "audience.win_back_eligibility"),
    ]
    for spec in specs:
        assert spec.source_file == f"models/triggers/{spec.name}.yml"
        assert spec.model == f"{spec.name}_eligibility"
    cart = specs[0]
    assert (cart.category, cart.priority, cart.fires_on_absence) == ("marketing", 80, True)
    assert cart.templates == (
        "abandoned_cart/reminder",
        "abandoned_cart/second_reminder",
        "abandoned_cart/discount__ten_percent",
        "abandoned_cart/discount__free_shipping",
    )


def test_a_trigger_is_paired_with_its_eligibility_model() -> None:
    manifest = {
        "nodes": {
            "e": _eligibility("welcome_eligibility", "welcome"),
            "t": _trigger(
                "welcome",
                {"category": "transactional", "priority": 7, "steps": _steps("a", "b")},
            ),
            "other": {"resource_type": "seed", "name": "s", "schema": "raw", "config": {}},
        }
    }
    [spec] = triggers_from_manifest(manifest)
    assert (spec.name, spec.model, spec.relation) == (
        "welcome",
        "welcome_eligibility",
        "audience.welcome_eligibility",
    )
    assert (spec.category, spec.priority, spec.step_names) == ("transactional", 7, "a, b")
    assert spec.consent_list == "news"
    assert spec.source_file == "models/triggers/welcome.yml"


def test_models_without_nudge_meta_are_not_triggers() -> None:
    manifest = {
        "nodes": {
            "m": {"resource_type": "model", "name": "m", "schema": "s", "config": {"meta": {}}}
        }
    }
    assert triggers_from_manifest(manifest) == []


def test_an_invalid_step_names_the_file_and_field() -> None:
    manifest = {
        "nodes": {
            "e": _eligibility("welcome_eligibility", "welcome"),
            "t": _trigger("welcome", {"steps": [{"name": "Day 1"}]}, "models/triggers/w.yml"),
        }
    }
    with pytest.raises(
        TriggerDefinitionError,
        match=r"^models/triggers/w\.yml: config\.meta\.nudge\.steps\[0\]\.name: .*'Day 1'",
    ):
        triggers_from_manifest(manifest)


def test_an_unknown_category_is_rejected() -> None:
    manifest = {
        "nodes": {
            "e": _eligibility("t_eligibility", "t"),
            "t": _trigger("t", {"category": "promo", "steps": _steps("s")}),
        }
    }
    with pytest.raises(
        TriggerDefinitionError,
        match=r"models/triggers/t\.yml: config\.meta\.nudge\.category: must be one of .*'promo'",
    ):
        triggers_from_manifest(manifest)


def test_a_trigger_with_two_eligibility_models_is_rejected() -> None:
    manifest = {
        "nodes": {
            "a": _eligibility("a", "t"),
            "b": _eligibility("b", "t"),
            "t": _trigger("t", {"steps": _steps("s")}),
        }
    }
    with pytest.raises(TriggerDefinitionError, match="'t' has two eligibility models: a and b"):
        triggers_from_manifest(manifest)


def test_a_trigger_model_name_must_be_an_identifier() -> None:
    manifest = {
        "nodes": {
            "e": _eligibility("e", "Bad-Name"),
            "t": _trigger("Bad-Name", {"steps": _steps("s")}),
        }
    }
    with pytest.raises(TriggerDefinitionError, match="'Bad-Name' must be a lowercase identifier"):
        triggers_from_manifest(manifest)
