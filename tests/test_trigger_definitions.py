"""The catalogue's YAML definitions: valid, paired with templates, and the copies the dbt unit
tests use (they cannot read the graph) identical to the real ones."""

from __future__ import annotations

import pytest
import yaml

from dagster_project.config import MODELS_DIR, TEMPLATES_DIR
from dagster_project.rendering import Renderer
from dagster_project.triggers import (
    TriggerDefinitionError,
    higher_priority,
    project_triggers,
    triggers_from_manifest,
)

CATALOGUE = {
    "abandoned_cart",
    "birthday",
    "browse_abandonment",
    "confirm_subscription",
    "order_confirmation",
    "post_purchase_review",
    "re_engagement",
    "shipping_notification",
    "signup_anniversary",
    "welcome",
    "win_back",
}


def _yaml_meta(trigger: str) -> dict:
    data = yaml.safe_load((MODELS_DIR / "triggers" / f"{trigger}.yml").read_text())
    (model,) = [m for m in data["models"] if m["name"] == trigger]
    return model["config"]["meta"]["nudge"]


def test_the_catalogue_loads_with_every_template_present() -> None:
    specs, _ = project_triggers()
    assert {s.name for s in specs} == CATALOGUE
    renderer = Renderer(TEMPLATES_DIR)
    for spec in specs:
        assert spec.source_file == f"models/triggers/{spec.name}.yml"
        assert spec.relation == f"audience.{spec.name}_eligibility"
        for template in spec.templates:
            renderer.check(template)


def test_catalogue_sequences_are_what_the_issue_asks_for() -> None:
    specs = {s.name: s for s in project_triggers()[0]}
    delays = {name: [st.delay_minutes for st in spec.steps] for name, spec in specs.items()}
    assert delays["welcome"] == [0, 3 * 1440, 9 * 1440]
    assert delays["abandoned_cart"] == [60, 24 * 60, 72 * 60]
    assert delays["browse_abandonment"] == [120]
    assert delays["post_purchase_review"] == [10 * 1440]
    # Transactional mail goes at once, and never to a list that did not ask for it.
    for name in ("order_confirmation", "shipping_notification", "confirm_subscription"):
        assert specs[name].category == "transactional", name
        assert specs[name].steps[0].delay_minutes == 0, name
    assert delays["win_back"] == [90 * 1440, 104 * 1440]
    # Engagement-aware: the last call only to those who clicked nothing, the discount only to
    # carts whose reminders were not clicked.
    assert delays["re_engagement"] == [0, 7 * 1440]
    assert "len(clicked_steps) = 0" in (specs["re_engagement"].steps[1].condition or "")
    assert "len(clicked_steps) = 0" in (specs["abandoned_cart"].steps[2].condition or "")
    assert specs["browse_abandonment"].sequence.reentry == "after_days:30"
    assert specs["welcome"].sequence.reentry == "never"
    assert {v.name for v in specs["abandoned_cart"].steps[2].variants} == {
        "ten_percent",
        "free_shipping",
    }
    # Double opt-in asks for consent, so it cannot need it; orders and parcels are the
    # customer's own business: the transactional triggers.
    assert delays["confirm_subscription"] == [0, 48 * 60]
    assert {n for n, s in specs.items() if s.category != "marketing"} == {
        "confirm_subscription",
        "order_confirmation",
        "shipping_notification",
    }
    # Never a late confirmation of an old order on a first run over years of history.
    assert specs["order_confirmation"].steps[0].grace_minutes == 24 * 60


def test_unit_test_copies_of_definitions_match_the_trigger_yaml() -> None:
    # The engine's tests (audience/) and the trigger models' own tests of their entry window.
    copies = [
        (test["model"], test["overrides"]["macros"]["nudge_trigger_meta"])
        for folder in ("audience", "triggers")
        for path in sorted((MODELS_DIR / folder).glob("*.yml"))
        for test in yaml.safe_load(path.read_text()).get("unit_tests") or []
        if "nudge_trigger_meta" in (test.get("overrides") or {}).get("macros", {})
    ]
    assert copies, "the engine's unit tests no longer override nudge_trigger_meta"
    assert "birthday" in {model for model, _ in copies}
    for model, meta in copies:
        trigger = model.removesuffix("_eligibility")
        assert meta == _yaml_meta(trigger), f"{model}: copy differs from {trigger}.yml"


def _manifest(columns: dict[str, dict]) -> dict:
    return {
        "nodes": {
            "model.nudge.t": {
                "resource_type": "model",
                "name": "t",
                "schema": "triggers",
                "patch_path": "nudge://../models/triggers/t.yml",
                "columns": columns,
                "config": {"meta": {"nudge": {"steps": [{"name": "s", "delay": "1h"}]}}},
            },
            "model.nudge.t_eligibility": {
                "resource_type": "model",
                "name": "t_eligibility",
                "schema": "audience",
                "config": {"meta": {"nudge_eligibility": {"trigger": "t"}}},
            },
        }
    }


def test_an_entries_model_may_not_output_engine_columns() -> None:
    assert [s.name for s in triggers_from_manifest(_manifest({"cart_id": {}}))] == ["t"]
    with pytest.raises(TriggerDefinitionError, match=r"models/triggers/t.yml: .*due_at"):
        triggers_from_manifest(_manifest({"due_at": {}}))


def test_every_trigger_yaml_sits_next_to_its_sql() -> None:
    for trigger in CATALOGUE:
        assert (MODELS_DIR / "triggers" / f"{trigger}.sql").exists()
        assert (MODELS_DIR / "audience" / f"{trigger}_eligibility.sql").read_text().strip() == (
            "{{ sequence_eligibility('" + trigger + "') }}"
        )


def test_higher_priority_marketing_triggers_take_the_cap_slot_first() -> None:
    specs = {s.name: s for s in project_triggers()[0]}
    above_welcome = {s.name for s in higher_priority(specs["welcome"], list(specs.values()))}
    assert above_welcome == {"abandoned_cart", "birthday"}  # priorities 80 and 70 over 60
    assert higher_priority(specs["abandoned_cart"], list(specs.values())) == []
