"""A trigger's sequence YAML (``config.meta.nudge``): validation, durations, re-entry, A/B
variants and the stable buckets that pick variants and holdouts."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import duckdb
import pytest

from dagster_project.sequences import (
    SequenceDefinition,
    Step,
    TriggerDefinitionError,
    Variant,
    minutes,
    parse_sequence,
)
from dagster_project.triggers import triggers_from_manifest
from tests.support.mirrors import bucket, holdout_bucket, variant_for

WHERE = "models/triggers/welcome.yml"
STEPS = [{"name": "day_0", "delay": "0h"}, {"name": "day_3", "delay": "3d"}]


def _parse(**meta: Any) -> SequenceDefinition:
    return parse_sequence("welcome", {"steps": STEPS, **meta}, WHERE)


def _fails(meta: Any, field: str, message: str = "") -> None:
    """parse_sequence rejects ``meta`` naming the file and ``config.meta.nudge.<field>``."""
    expected = f"^{re.escape(f'{WHERE}: config.meta.nudge.{field}: ')}.*{message}"
    with pytest.raises(TriggerDefinitionError, match=expected):
        parse_sequence("welcome", meta, WHERE)


# --- defaults --------------------------------------------------------------------------------


def test_a_minimal_sequence_gets_the_documented_defaults() -> None:
    sequence = parse_sequence("welcome", {"steps": [{"name": "day_0"}]}, WHERE)
    assert sequence == SequenceDefinition(
        category="marketing",
        priority=50,
        reentry="once_per_key",
        holdout_percent=0.0,
        cap_policy="defer",
        quiet_hours=True,  # marketing respects quiet hours unless told otherwise
        fires_on_absence=False,
        exit=None,
        steps=(Step("day_0", 0, 24 * 60, "welcome/day_0"),),
    )


def test_every_field_is_read() -> None:
    sequence = parse_sequence(
        "welcome",
        {
            "category": "transactional",
            "priority": 7,
            "reentry": "never",
            "reentry_key": "email",
            "holdout_percent": 12.5,
            "cap_policy": "skip",
            "quiet_hours": True,
            "fires_on_absence": True,
            "exit": "ordered_at is not null",
            "description": "free text",
            "steps": [
                {"name": "day_0", "delay": "90m", "grace": "2h", "template": "shared/hello"},
                {"name": "day_3", "delay": "3d", "grace": "1d", "condition": "order_count = 0"},
            ],
        },
        WHERE,
    )
    assert (sequence.category, sequence.priority, sequence.reentry) == (
        "transactional",
        7,
        "never",
    )
    assert (sequence.holdout_percent, sequence.cap_policy) == (12.5, "skip")
    assert (sequence.quiet_hours, sequence.fires_on_absence) == (True, True)
    assert sequence.exit == "ordered_at is not null"
    assert sequence.steps == (
        Step("day_0", 90, 120, "shared/hello"),
        Step("day_3", 3 * 1440, 1440, "welcome/day_3", condition="order_count = 0"),
    )
    assert sequence.steps[0].templates == ("shared/hello",)


def test_transactional_sequences_ignore_quiet_hours_by_default() -> None:
    assert _parse(category="transactional").quiet_hours is False
    assert _parse(category="marketing").quiet_hours is True
    assert _parse(category="marketing", quiet_hours=False).quiet_hours is False


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0h", 0),
        ("30m", 30),
        ("90m", 90),
        ("24h", 1440),
        ("3d", 4320),
        (" 2h ", 120),
        ("1w", None),
        ("h", None),
        ("1.5h", None),
        ("-1h", None),
        ("2 h", None),
        ("", None),
        (30, None),
        (None, None),
    ],
)
def test_durations(text: Any, expected: int | None) -> None:
    assert minutes(text) == expected


@pytest.mark.parametrize("delay", ["1w", "3 days", 5, "", "-2h"])
def test_a_bad_delay_names_the_step_and_field(delay: Any) -> None:
    steps = [{"name": "day_0"}, {"name": "day_3", "delay": delay}]
    _fails({"steps": steps}, "steps[1].delay", "must look like 30m, 24h or 3d")


def test_steps_must_be_in_order_of_delay() -> None:
    steps = [{"name": "late", "delay": "2d"}, {"name": "early", "delay": "47h"}]
    _fails({"steps": steps}, "steps[1].delay", "steps must be in order")
    # Equal delays are in order (two emails at the same moment, e.g. a split by condition).
    same = [{"name": "a", "delay": "2d"}, {"name": "b", "delay": "48h"}]
    assert [s.delay_minutes for s in parse_sequence("w", {"steps": same}, WHERE).steps] == [
        2880,
        2880,
    ]


@pytest.mark.parametrize("grace", ["0h", "0m", "forever", 24])
def test_a_bad_or_zero_grace_is_rejected(grace: Any) -> None:
    _fails({"steps": [{"name": "day_0", "grace": grace}]}, "steps[0].grace", "> 0")


# --- structure -------------------------------------------------------------------------------


def test_a_step_may_go_out_at_the_customers_best_hour() -> None:
    steps = [{"name": "day_0", "delay": "0h", "grace": "48h", "send_time": "best_hour"}]
    assert _parse(steps=steps).steps[0].send_time == "best_hour"
    assert _parse().steps[0].send_time is None


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"send_time": "morning"}, "must be one of best_hour, got 'morning'"),
        # A window shorter than a day may not contain the customer's hour at all.
        ({"send_time": "best_hour", "grace": "12h"}, "at least 24h"),
    ],
)
def test_a_bad_send_time_is_rejected(step: dict[str, Any], message: str) -> None:
    _fails({"steps": [{"name": "day_0", **step}]}, "steps[0].send_time", message)


def test_meta_must_be_a_mapping() -> None:
    with pytest.raises(TriggerDefinitionError, match=rf"^{WHERE}: config\.meta\.nudge must be"):
        parse_sequence("welcome", ["steps"], WHERE)


@pytest.mark.parametrize(
    ("meta", "field", "message"),
    [
        ({"steps": STEPS, "stepz": []}, "stepz", "unknown field"),
        ({"steps": STEPS, "category": "promo"}, "category", "must be one of.*'promo'"),
        ({"steps": STEPS, "priority": "high"}, "priority", "must be an integer"),
        ({"steps": STEPS, "priority": 1.5}, "priority", "must be an integer"),
        ({"steps": STEPS, "priority": True}, "priority", "must be an integer"),
        ({"steps": STEPS, "cap_policy": "drop"}, "cap_policy", "must be one of defer, skip"),
        ({"steps": STEPS, "quiet_hours": "yes"}, "quiet_hours", "true or false"),
        ({"steps": STEPS, "fires_on_absence": 1}, "fires_on_absence", "true or false"),
        ({"steps": STEPS, "exit": "  "}, "exit", "SQL boolean expression"),
        ({"steps": STEPS, "exit": 3}, "exit", "SQL boolean expression"),
        ({}, "steps", "non-empty list"),
        ({"steps": []}, "steps", "non-empty list"),
        ({"steps": {"name": "day_0"}}, "steps", "non-empty list"),
        ({"steps": [{"name": "day_0"}, "day_3"]}, "steps[1]", "must be a mapping"),
        ({"steps": [{"name": "day_0", "wait": "1h"}]}, "steps[0].wait", "unknown field"),
        ({"steps": [{"delay": "1h"}]}, "steps[0].name", "lowercase identifier"),
        ({"steps": [{"name": "Day 1"}]}, "steps[0].name", "lowercase identifier.*'Day 1'"),
        ({"steps": [{"name": "1st"}]}, "steps[0].name", "lowercase identifier"),
        (
            {"steps": [{"name": "a"}, {"name": "b"}, {"name": "a", "delay": "1d"}]},
            "steps[2].name",
            "declared twice",
        ),
        ({"steps": [{"name": "a", "condition": ""}]}, "steps[0].condition", "SQL boolean"),
        ({"steps": [{"name": "a", "condition": 1}]}, "steps[0].condition", "SQL boolean"),
    ],
)
def test_every_error_names_the_file_and_the_field(meta: Any, field: str, message: str) -> None:
    _fails(meta, field, message)


# --- re-entry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reentry", "expected"),
    [
        ("once_per_key", "once_per_key"),
        ("never", "never"),
        ({"after_days": 30}, "after_days:30"),
        ({"after_days": 1}, "after_days:1"),
    ],
)
def test_reentry_forms(reentry: Any, expected: str) -> None:
    assert _parse(reentry=reentry).reentry == expected


@pytest.mark.parametrize(
    "reentry",
    [
        "always",
        {"after_days": 0},
        {"after_days": -3},
        {"after_days": "30"},
        {"after_days": True},
        {"after_days": 30, "max": 2},
        {"days": 30},
        30,
    ],
)
def test_invalid_reentry_is_rejected(reentry: Any) -> None:
    _fails({"steps": STEPS, "reentry": reentry}, "reentry", "once_per_key, never or")


# --- holdout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("percent", "expected"), [(0, 0.0), (12.5, 12.5), (100, 100.0)])
def test_holdout_percent_bounds_are_inclusive(percent: float, expected: float) -> None:
    assert _parse(holdout_percent=percent).holdout_percent == expected


@pytest.mark.parametrize("percent", [-0.1, 100.5, 150, "10", True, None])
def test_holdout_percent_out_of_bounds_is_rejected(percent: Any) -> None:
    _fails({"steps": STEPS, "holdout_percent": percent}, "holdout_percent", "0 to 100")


def test_holdout_bucket_is_per_trigger_and_customer() -> None:
    assert holdout_bucket("welcome", "c1") == bucket("welcome:c1")
    assert holdout_bucket("welcome", "c1") == holdout_bucket("welcome", "c1")
    # Across many customers, different triggers hold out different people.
    differ = sum(
        holdout_bucket("welcome", f"c{i}") != holdout_bucket("birthday", f"c{i}")
        for i in range(100)
    )
    assert differ > 90


# --- variants --------------------------------------------------------------------------------


def _variants(variants: Any, **step: Any) -> tuple[Variant, ...]:
    meta = {"steps": [{"name": "discount", "variants": variants, **step}]}
    return parse_sequence("abandoned_cart", meta, WHERE).steps[0].variants


def test_variants_default_to_their_own_template() -> None:
    variants = _variants(
        [
            {"name": "ten_percent", "weight": 70},
            {"name": "free_shipping", "weight": 30, "template": "shared/free_shipping"},
        ]
    )
    assert variants == (
        Variant("ten_percent", 70, "abandoned_cart/discount__ten_percent"),
        Variant("free_shipping", 30, "shared/free_shipping"),
    )
    step = parse_sequence(
        "abandoned_cart",
        {
            "steps": [
                {
                    "name": "discount",
                    "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
                }
            ]
        },
        WHERE,
    ).steps[0]
    # A step with variants renders one of the variants' templates, never the step's own.
    assert step.templates == ("abandoned_cart/discount__a", "abandoned_cart/discount__b")


@pytest.mark.parametrize(
    ("variants", "field", "message"),
    [
        ([{"name": "only", "weight": 1}], "steps[0].variants", "at least two"),
        ({"name": "a", "weight": 1}, "steps[0].variants", "at least two"),
        ([{"name": "a", "weight": 1}, "b"], "steps[0].variants[1]", "must be a mapping"),
        (
            [{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "share": 2}],
            "steps[0].variants[1]",
            "must be a mapping",
        ),
        (
            [{"name": "A", "weight": 1}, {"name": "b", "weight": 1}],
            "steps[0].variants[0].name",
            "lowercase identifier",
        ),
        (
            [{"name": "a", "weight": 1}, {"name": "b", "weight": 0}],
            "steps[0].variants[1].weight",
            "positive integer",
        ),
        (
            [{"name": "a", "weight": 1}, {"name": "b", "weight": -5}],
            "steps[0].variants[1].weight",
            "positive integer",
        ),
        (
            [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 1}],
            "steps[0].variants[0].weight",
            "positive integer",
        ),
        (
            [{"name": "a", "weight": True}, {"name": "b", "weight": 1}],
            "steps[0].variants[0].weight",
            "positive integer",
        ),
        (
            [{"name": "a"}, {"name": "b", "weight": 1}],
            "steps[0].variants[0].weight",
            "positive integer",
        ),
        (
            [{"name": "a", "weight": 1}, {"name": "a", "weight": 2}],
            "steps[0].variants",
            "unique",
        ),
    ],
)
def test_invalid_variants_name_the_field(variants: Any, field: str, message: str) -> None:
    _fails({"steps": [{"name": "discount", "variants": variants}]}, field, message)


def test_bucket_is_stable_and_in_range() -> None:
    assert bucket("abc") == bucket("abc")
    # Pinned: md5("abc") starts 90015098, and 0x90015098 = 2416005272.
    assert bucket("abc") == 0x90015098 % 10000 == 5272
    values = [bucket(f"send-{i}") for i in range(2000)]
    assert all(0 <= v < 10000 for v in values)
    assert len(set(values)) > 1500  # spread, not a constant


def test_bucket_mirrors_the_dbt_macro_in_duckdb() -> None:
    # The expression macro nudge_bucket compiles to (dbt/macros/sequence.sql).
    texts = [f"welcome:cust_{i}" for i in range(300)] + ["", "é", "abandoned_cart:c1"]
    con = duckdb.connect()
    try:
        rows = con.execute(
            "select t, cast(('0x' || left(md5(t), 8)) as bigint) % 10000 "
            "from unnest($texts) as u(t)",
            {"texts": texts},
        ).fetchall()
    finally:
        con.close()
    assert {t: b for t, b in rows} == {t: bucket(t) for t in texts}


def test_variant_for_is_deterministic_and_follows_the_weights() -> None:
    variants = (Variant("a", 70, "t/s__a"), Variant("b", 30, "t/s__b"))
    ids = [f"{i:032x}" for i in range(10_000)]
    picks = [variant_for(i, variants) for i in ids]
    assert picks == [variant_for(i, variants) for i in ids]
    counts = Counter(picks)
    assert set(counts) == {"a", "b"}
    assert abs(counts["a"] / len(ids) - 0.70) <= 0.03
    assert abs(counts["b"] / len(ids) - 0.30) <= 0.03


def test_variant_for_splits_three_ways_by_bucket_range() -> None:
    variants = (Variant("x", 1, "t/x"), Variant("y", 1, "t/y"), Variant("z", 2, "t/z"))
    ids = [f"send-{i}" for i in range(10_000)]
    for send_id in ids[:500]:
        # x owns buckets [0, 2500), y [2500, 5000), z [5000, 10000): the macro's boundaries.
        expected = "x" if bucket(send_id) < 2500 else "y" if bucket(send_id) < 5000 else "z"
        assert variant_for(send_id, variants) == expected
    counts = Counter(variant_for(i, variants) for i in ids)
    assert abs(counts["x"] / len(ids) - 0.25) <= 0.03
    assert abs(counts["y"] / len(ids) - 0.25) <= 0.03
    assert abs(counts["z"] / len(ids) - 0.50) <= 0.03


def test_variant_boundaries_belong_to_the_next_variant() -> None:
    # Buckets are half-open ranges, as in the macro (`bucket * total < upper * 10000`).
    variants = (Variant("x", 1, "t/x"), Variant("y", 1, "t/y"), Variant("z", 2, "t/z"))
    at = {2499: "send-10257", 2500: "send-21493", 4999: "send-19167", 5000: "send-11670"}
    assert {b: bucket(i) for b, i in at.items()} == {b: b for b in at}
    assert [variant_for(at[b], variants) for b in (2499, 2500, 4999, 5000)] == [
        "x",
        "y",
        "y",
        "z",
    ]


def test_variant_for_without_variants_is_none() -> None:
    assert variant_for("any", ()) is None


# --- the manifest ----------------------------------------------------------------------------


def _trigger(name: str, nudge: Any) -> dict[str, Any]:
    return {
        "resource_type": "model",
        "name": name,
        "schema": "triggers",
        "original_file_path": f"models/triggers/{name}.sql",
        "patch_path": f"nudge://../models/triggers/{name}.yml",
        "config": {"meta": {"nudge": nudge}},
    }


def _eligibility(name: str, trigger: str) -> dict[str, Any]:
    return {
        "resource_type": "model",
        "name": name,
        "schema": "audience",
        "original_file_path": f"models/audience/{name}.sql",
        "config": {"meta": {"nudge_eligibility": {"trigger": trigger}}},
    }


def test_a_manifest_error_names_the_trigger_yaml_and_the_field() -> None:
    manifest = {
        "nodes": {
            "t": _trigger("x", {"steps": [{"name": "a"}, {"name": "b", "delay": "soon"}]}),
            "e": _eligibility("x_eligibility", "x"),
        }
    }
    with pytest.raises(
        TriggerDefinitionError,
        match=r"^models/triggers/x\.yml: config\.meta\.nudge\.steps\[1\]\.delay: .*'soon'",
    ):
        triggers_from_manifest(manifest)


def test_a_trigger_without_an_eligibility_model_is_a_clear_error() -> None:
    manifest = {"nodes": {"t": _trigger("x", {"steps": [{"name": "a"}]})}}
    with pytest.raises(TriggerDefinitionError) as info:
        triggers_from_manifest(manifest)
    message = str(info.value)
    assert message.startswith("models/triggers/x.yml: trigger 'x' has no eligibility model")
    assert "models/audience/x_eligibility.sql" in message
    assert "{{ sequence_eligibility('x') }}" in message


def test_an_eligibility_model_naming_no_trigger_is_a_clear_error() -> None:
    manifest = {
        "nodes": {
            "t": _trigger("x", {"steps": [{"name": "a"}]}),
            "e": _eligibility("x_eligibility", "x"),
            "o": _eligibility("y_eligibility", "y"),
        }
    }
    with pytest.raises(TriggerDefinitionError) as info:
        triggers_from_manifest(manifest)
    message = str(info.value)
    assert message.startswith("models/audience/y_eligibility.sql: sequence_eligibility('y')")
    assert "names no trigger model with config.meta.nudge" in message


def test_a_well_formed_manifest_pairs_trigger_and_eligibility() -> None:
    manifest = {
        "nodes": {
            "t": _trigger("x", {"priority": 90, "steps": [{"name": "a"}, {"name": "b"}]}),
            "e": _eligibility("x_eligibility", "x"),
        }
    }
    [spec] = triggers_from_manifest(manifest)
    assert (spec.name, spec.relation, spec.priority, spec.templates) == (
        "x",
        "audience.x_eligibility",
        90,
        ("x/a", "x/b"),
    )
