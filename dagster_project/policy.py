"""How a push behaves: guards, retries, frequency caps, pauses and limits, in one place.

Every knob is declared once, as a field of one of the small policies below, with its default,
its description and the ``NUDGE_*`` variable that sets it (the field's metadata). From that one
declaration come:

* the policy objects the engine uses (:class:`DispatchPolicy` and its parts);
* :func:`values_from_env`, which reads the ``NUDGE_*`` variables that are set;
* the Dagster ``send_policy`` resource's config fields (``defs/resources.py`` builds them from
  :func:`knobs`), so run config, the UI's config editor and the environment agree.

In run config and the environment a knob has a flat name (``mass_send_max``,
``retry_base_minutes``, ``frequency_cap_day``, ...); in code it lives on its policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError


def _knob(default: Any, doc: str, env: str | None = None, name: str | None = None) -> Any:
    """A policy field: its default, what it does, its NUDGE_* variable and its flat name."""
    metadata = {"doc": doc, "env": env, "name": name}
    if isinstance(default, frozenset):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class GuardPolicy:
    """Thresholds of the guards that hold a trigger's push (see ``guards.py``)."""

    mass_send_max: int = _knob(
        5000, "Hold a trigger whose tick plans more new sends than this.", "NUDGE_MASS_SEND_MAX"
    )
    mass_send_multiple: float = _knob(
        10.0,
        "...or more than this multiple of the median of its recent ticks that sent anything.",
        "NUDGE_MASS_SEND_MULTIPLE",
    )
    mass_send_min: int = _knob(
        100,
        "Below this many new sends the multiple rule never holds (small numbers are noisy).",
        "NUDGE_MASS_SEND_MIN",
    )
    mass_send_history_ticks: int = _knob(
        24, "How many recent ticks with sends form the mass-send baseline (3 at least)."
    )
    freshness_max_hours: float = _knob(
        24.0,
        "Hold absence triggers when the newest event is older than this at the tick.",
        "NUDGE_FRESHNESS_MAX_HOURS",
    )
    failure_rate_max: float = _knob(
        0.05,
        "The failure_rate asset check warns above this share of failed and unknown sends.",
        "NUDGE_FAILURE_RATE_MAX",
    )
    complaint_rate_max: float = _knob(
        0.003,
        "Hold marketing triggers when the provider's trailing 24 h spam complaint rate passes "
        "this (0.3 %: Gmail's bulk-sender limit).",
        "NUDGE_COMPLAINT_RATE_MAX",
    )
    hard_bounce_rate_max: float = _knob(
        0.05,
        "...or its trailing 24 h hard bounce rate passes this.",
        "NUDGE_HARD_BOUNCE_RATE_MAX",
    )
    deliverability_min_sends: int = _knob(
        500,
        "Below this many sends in the trailing 24 h the rates are too noisy to hold on.",
        "NUDGE_DELIVERABILITY_MIN_SENDS",
    )
    approved: frozenset[str] = _knob(
        frozenset(),
        "Triggers whose guard hold is released for this run (nudge run --approve).",
        name="approve",
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How later ticks retry ``failed_retryable`` sends.

    The wait before the next attempt doubles with each attempt (``base_minutes``, then twice
    that, ...) up to ``max_backoff_minutes``; a send still failing ``max_age_hours`` after its
    first planning gives up as ``failed_permanent`` (reason ``retry_max_age``). Its grace window
    usually ends first, which makes it ``expired``.
    """

    base_minutes: int = _knob(
        15,
        "First wait before a failed_retryable send is tried again; doubles per attempt.",
        "NUDGE_RETRY_BASE_MINUTES",
        "retry_base_minutes",
    )
    max_backoff_minutes: int = _knob(
        360,
        "The longest wait between two retries.",
        "NUDGE_RETRY_MAX_BACKOFF_MINUTES",
        "retry_max_backoff_minutes",
    )
    max_age_hours: int = _knob(
        24,
        "Give up (failed_permanent, retry_max_age) on a send still failing after this long.",
        "NUDGE_RETRY_MAX_AGE_HOURS",
        "retry_max_age_hours",
    )


@dataclass(frozen=True)
class FrequencyCaps:
    """At most ``day`` marketing emails per customer per 24 h and ``week`` per 7 days.

    Counted across every trigger from what the ledger says went out (by tick time); a capped
    step is deferred to a later tick or skipped, per its trigger's ``cap_policy``.
    Transactional triggers neither obey nor count toward the caps.
    """

    day: int = _knob(
        1,
        "At most this many marketing emails per customer per 24 h (all triggers).",
        "NUDGE_FREQUENCY_CAP_DAY",
        "frequency_cap_day",
    )
    week: int = _knob(
        3,
        "At most this many marketing emails per customer per 7 days.",
        "NUDGE_FREQUENCY_CAP_WEEK",
        "frequency_cap_week",
    )


# Gmail clips a message whose HTML is over about 102 KB ("[Message clipped]"), hiding the rest,
# the unsubscribe link included; bigger messages are a template or data bug, not an email.
DEFAULT_MAX_MESSAGE_BYTES = 100_000


@dataclass(frozen=True)
class DispatchPolicy:
    """Everything that shapes one trigger's push."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    guards: GuardPolicy = field(default_factory=GuardPolicy)
    caps: FrequencyCaps = field(default_factory=FrequencyCaps)
    paused: frozenset[str] = _knob(
        frozenset(),
        "Triggers switched off: nothing is planned, resumed or sent for them.",
        "NUDGE_PAUSED_TRIGGERS",
    )
    max_message_bytes: int = _knob(
        DEFAULT_MAX_MESSAGE_BYTES,
        "A rendered message (HTML + text) bigger than this is not sent: failed_permanent, "
        "reason message_too_large.",
        "NUDGE_MAX_MESSAGE_BYTES",
    )
    render_processes: int = _knob(
        2,
        "Worker processes that render a push of 1,000 emails or more, beside the send step "
        "(0 or 1: render in the send step's own process).",
        "NUDGE_RENDER_PROCESSES",
    )
    # Sends rendered, re-checked and handed to the provider per batch; set by the esp resource.
    # None: the provider's default_batch (a full round of requests for a batch API).
    batch_size: int | None = None
    # While a push runs, answered batches are settled in the ledger together once this many
    # sends are waiting (all of them at its end). One ledger transaction costs about as much
    # for a hundred rows as for five hundred, and its CPU competes with the requests on the
    # wire. The answers are in the hand-over journal meanwhile, so a crash settles them on the
    # next tick just as it settles one batch. The crash tests lower it to one batch.
    settle_every: int = 500

    @classmethod
    def from_values(
        cls, values: Mapping[str, Any], *, batch_size: int | None = None
    ) -> DispatchPolicy:
        """A policy from flat knob values (run config, :func:`values_from_env`); the rest are
        defaults. Unknown names are an error."""
        unknown = sorted(set(values) - {k.name for k in knobs()})
        if unknown:
            raise ConfigError(f"unknown send policy settings: {', '.join(unknown)}")
        parts: dict[type, dict[str, Any]] = {}
        for knob in knobs():
            if knob.name in values:
                value = values[knob.name]
                if knob.python_type == "frozenset[str]":
                    value = frozenset(value)
                parts.setdefault(knob.owner, {})[knob.attribute] = value
        return cls(
            retry=RetryPolicy(**parts.get(RetryPolicy, {})),
            guards=GuardPolicy(**parts.get(GuardPolicy, {})),
            caps=FrequencyCaps(**parts.get(FrequencyCaps, {})),
            batch_size=batch_size,
            **parts.get(DispatchPolicy, {}),
        )


@dataclass(frozen=True)
class Knob:
    """One setting of the send policy, as run config and the environment know it."""

    name: str  # flat name in run config (send_policy resource) and values_from_env
    owner: type  # the policy class it lives on
    attribute: str  # its attribute there
    python_type: str  # "int", "float" or "frozenset[str]" (a list in config)
    default: Any
    doc: str
    env: str | None  # the NUDGE_* variable that sets it, if any


def knobs() -> Iterator[Knob]:
    """Every setting of the send policy, in declaration order."""
    for owner in (GuardPolicy, RetryPolicy, FrequencyCaps, DispatchPolicy):
        for f in dataclasses.fields(owner):
            if "doc" not in f.metadata:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            yield Knob(
                name=f.metadata["name"] or f.name,
                owner=owner,
                attribute=f.name,
                python_type=str(f.type),
                default=default,
                doc=f.metadata["doc"],
                env=f.metadata["env"],
            )


def _parse(knob: Knob, raw: str) -> Any:
    if knob.python_type == "frozenset[str]":
        return sorted({t.strip() for t in raw.split(",") if t.strip()})
    parse: Callable[[str], Any] = int if knob.python_type == "int" else float
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{knob.env}={raw!r} is not a valid {parse.__name__}") from None
    if value < 0:
        raise ConfigError(f"{knob.env}={raw!r} must not be negative")
    return value


def values_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The send-policy knobs set in the environment, by flat name (unset ones are left out)."""
    values: dict[str, Any] = {}
    for knob in knobs():
        raw = (env.get(knob.env) or "").strip() if knob.env else ""
        if raw:
            values[knob.name] = _parse(knob, raw)
    return values
