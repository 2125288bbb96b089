"""A trigger's sequence as declared in its YAML (``config.meta.nudge``), validated at load time.

The dbt macro ``sequence_eligibility`` applies the same definition in SQL; this module checks
it before anything runs, with errors that name the YAML file and the field
(``models/triggers/welcome.yml: config.meta.nudge.steps[1].delay: ...``), and gives the send
step what it needs in Python: the templates to check, the priority and the cap policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DURATION = re.compile(r"^(\d+)([mhd])$")
CATEGORIES = ("marketing", "transactional")
CAP_POLICIES = ("defer", "skip")
REENTRY = ("once_per_key", "never")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}
_TOP_LEVEL = {
    "category",
    "priority",
    "reentry",
    "reentry_key",
    "holdout_percent",
    "cap_policy",
    "quiet_hours",
    "fires_on_absence",
    "exit",
    "steps",
    "description",
}
_STEP_KEYS = {"name", "delay", "grace", "condition", "template", "variants", "send_time"}
# `send_time: best_hour`: due at the customer's best local hour within the grace window.
SEND_TIMES = ("best_hour",)
_VARIANT_KEYS = {"name", "weight", "template"}


class TriggerDefinitionError(ValueError):
    """A trigger's YAML is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Variant:
    name: str
    weight: int
    template: str


@dataclass(frozen=True)
class Step:
    name: str
    delay_minutes: int
    grace_minutes: int
    template: str  # "<trigger>/<step>" without the part suffix
    condition: str | None = None
    variants: tuple[Variant, ...] = ()
    send_time: str | None = None

    @property
    def templates(self) -> tuple[str, ...]:
        """Every template this step can render (one per variant)."""
        return tuple(v.template for v in self.variants) or (self.template,)


@dataclass(frozen=True)
class SequenceDefinition:
    """The parsed ``config.meta.nudge`` of one trigger."""

    category: str
    priority: int
    reentry: str  # once_per_key | never | after_days:N
    holdout_percent: float
    cap_policy: str
    quiet_hours: bool
    fires_on_absence: bool
    exit: str | None
    steps: tuple[Step, ...]


def minutes(value: Any) -> int | None:
    """``"90m"``, ``"24h"``, ``"3d"`` -> minutes; None when it is not that shape."""
    match = DURATION.match(str(value).strip())
    if not match:
        return None
    return int(match.group(1)) * _UNIT_MINUTES[match.group(2)]


def parse_sequence(trigger: str, meta: Any, where: str) -> SequenceDefinition:
    """Validate one trigger's ``config.meta.nudge``; raise naming ``where`` and the field."""

    def fail(field: str, message: str) -> TriggerDefinitionError:
        return TriggerDefinitionError(f"{where}: config.meta.nudge.{field}: {message}")

    if not isinstance(meta, Mapping):
        raise TriggerDefinitionError(f"{where}: config.meta.nudge must be a mapping")
    unknown = sorted(set(meta) - _TOP_LEVEL)
    if unknown:
        raise fail(unknown[0], f"unknown field (allowed: {', '.join(sorted(_TOP_LEVEL))})")
    category = meta.get("category", "marketing")
    if category not in CATEGORIES:
        raise fail("category", f"must be one of {', '.join(CATEGORIES)}, got {category!r}")
    priority = meta.get("priority", 50)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise fail("priority", f"must be an integer, got {priority!r}")
    reentry = _reentry(meta.get("reentry", "once_per_key"), fail)
    holdout = meta.get("holdout_percent", 0)
    if not isinstance(holdout, int | float) or isinstance(holdout, bool) or not 0 <= holdout <= 100:
        raise fail("holdout_percent", f"must be a number from 0 to 100, got {holdout!r}")
    cap_policy = meta.get("cap_policy", "defer")
    if cap_policy not in CAP_POLICIES:
        raise fail("cap_policy", f"must be one of {', '.join(CAP_POLICIES)}, got {cap_policy!r}")
    flags = {}
    for flag, default in (("quiet_hours", category == "marketing"), ("fires_on_absence", False)):
        value = meta.get(flag, default)
        if not isinstance(value, bool):
            raise fail(flag, f"must be true or false, got {value!r}")
        flags[flag] = value
    exit_ = meta.get("exit")
    if exit_ is not None and (not isinstance(exit_, str) or not exit_.strip()):
        raise fail("exit", "must be a SQL boolean expression over the entry's columns")
    steps = _steps(trigger, meta.get("steps"), fail)
    return SequenceDefinition(
        category=category,
        priority=priority,
        reentry=reentry,
        holdout_percent=float(holdout),
        cap_policy=cap_policy,
        quiet_hours=flags["quiet_hours"],
        fires_on_absence=flags["fires_on_absence"],
        exit=exit_,
        steps=steps,
    )


def _reentry(value: Any, fail: Any) -> str:
    if value in REENTRY:
        return str(value)
    if isinstance(value, Mapping) and set(value) == {"after_days"}:
        days = value["after_days"]
        if isinstance(days, int) and not isinstance(days, bool) and days > 0:
            return f"after_days:{days}"
    raise fail(
        "reentry", f"must be once_per_key, never or {{after_days: N}} with N > 0, got {value!r}"
    )


def _steps(trigger: str, raw: Any, fail: Any) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw:
        raise fail("steps", "must be a non-empty list of steps")
    steps: list[Step] = []
    seen: set[str] = set()
    previous_delay = 0
    for i, item in enumerate(raw):
        field = f"steps[{i}]"
        if not isinstance(item, Mapping):
            raise fail(field, "must be a mapping with name, delay and grace")
        unknown = sorted(set(item) - _STEP_KEYS)
        if unknown:
            raise fail(
                f"{field}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(_STEP_KEYS))})"
            )
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise fail(f"{field}.name", f"must be a lowercase identifier, got {name!r}")
        if name in seen:
            raise fail(f"{field}.name", f"step {name!r} is declared twice")
        seen.add(name)
        delay = minutes(item.get("delay", "0h"))
        if delay is None:
            raise fail(
                f"{field}.delay", f"must look like 30m, 24h or 3d, got {item.get('delay')!r}"
            )
        if delay < previous_delay:
            raise fail(
                f"{field}.delay", "steps must be in order: delay is before the previous step's"
            )
        previous_delay = delay
        grace = minutes(item.get("grace", "24h"))
        if grace is None or grace == 0:
            raise fail(
                f"{field}.grace", f"must look like 30m, 24h or 3d (> 0), got {item.get('grace')!r}"
            )
        condition = item.get("condition")
        if condition is not None and (not isinstance(condition, str) or not condition.strip()):
            raise fail(f"{field}.condition", "must be a SQL boolean expression")
        template = item.get("template") or f"{trigger}/{name}"
        variants = _variants(trigger, name, item.get("variants"), f"{field}.variants", fail)
        send_time = item.get("send_time")
        if send_time is not None and send_time not in SEND_TIMES:
            raise fail(
                f"{field}.send_time", f"must be one of {', '.join(SEND_TIMES)}, got {send_time!r}"
            )
        if send_time is not None and grace < 24 * 60:
            # A shorter window may not contain the customer's hour at all.
            raise fail(f"{field}.send_time", "best_hour needs a grace window of at least 24h")
        steps.append(Step(name, delay, grace, str(template), condition, variants, send_time))
    return tuple(steps)


def _variants(trigger: str, step: str, raw: Any, field: str, fail: Any) -> tuple[Variant, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) < 2:
        raise fail(field, "must list at least two variants")
    variants: list[Variant] = []
    for j, item in enumerate(raw):
        where = f"{field}[{j}]"
        if not isinstance(item, Mapping) or set(item) - _VARIANT_KEYS:
            raise fail(where, "must be a mapping of name, weight and optional template")
        name, weight = item.get("name"), item.get("weight")
        if not isinstance(name, str) or not NAME.match(name):
            raise fail(f"{where}.name", f"must be a lowercase identifier, got {name!r}")
        if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
            raise fail(f"{where}.weight", f"must be a positive integer, got {weight!r}")
        template = item.get("template") or f"{trigger}/{step}__{name}"
        variants.append(Variant(name, weight, str(template)))
    if len({v.name for v in variants}) != len(variants):
        raise fail(field, "variant names must be unique")
    return tuple(variants)
