"""Seeing before sending: ``nudge preview`` and ``nudge render``.

Neither sends or writes the ledger. Both build the dbt models for the chosen instant into
``preview_*`` schemas (var ``schema_prefix``), so the tables the live tick sends from are never
touched; preview then runs the real planning step inside a transaction that is always rolled
back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import ledger
from .compose import add_links
from .config import ConfigError, Settings
from .dbt_runner import ensure_manifest, parse_cache, run_dbt, seeded_target
from .incremental import rebuild_changed
from .links import LinkSettings
from .masking import mask_email
from .policy import DispatchPolicy
from .postgres import locked_session
from .rendering import Renderer, RenderError
from .triggers import find_trigger, higher_priority, project_triggers
from .warehouse import Connection, connection, one, quote_relation, sql_for, warehouse_lock

PREVIEW_PREFIX = "preview_"


@dataclass
class Preview:
    trigger: str
    as_of: str
    # "step[/variant]: decision (reason)" -> count, decision being planned/deferred/holdout/...
    decisions: dict[str, int] = field(default_factory=dict)
    # step -> exclusion reason -> count, for the rows not due or excluded at as_of
    excluded: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def _preview_tables(settings: Settings, as_of: datetime) -> Iterator[Connection]:
    """Build every model for ``as_of`` into the preview schemas; yield a connection. The
    warehouse stays locked throughout, as for a tick."""

    def prepare(con: Connection) -> None:
        ledger.ensure_ledger(con)
        rebuild_changed(con, ensure_manifest(), PREVIEW_PREFIX)

    if settings.postgres is not None:
        # The session that holds the advisory lock waits while dbt, a subprocess, builds.
        with locked_session(settings.postgres) as con:
            prepare(con)
            _build(settings, as_of)
            yield con
        return
    with warehouse_lock(settings.warehouse):
        # dbt opens the file itself: no connection of ours may be open meanwhile.
        with connection(settings.warehouse) as duck:
            prepare(duck)
        _build(settings, as_of)
        with connection(settings.warehouse) as duck:
            yield duck


def _build(settings: Settings, as_of: datetime) -> None:
    """``dbt run`` of the preview schemas, in a target folder of this build's own that holds
    the warehouse's saved preview parse (its vars differ from the tick's, so it has its own):
    dbt parses only what changed since the last preview there, and previews of two warehouses
    at once never share a folder. Removed once the build succeeded; a failed one keeps it."""
    cache = parse_cache(settings.warehouse, "preview")
    with seeded_target("preview", cache) as target:
        run_dbt(
            settings,
            ["run", "--quiet"],
            as_of.isoformat(),
            schema_prefix=PREVIEW_PREFIX,
            target=target,
        )
    shutil.rmtree(target, ignore_errors=True)


def preview(settings: Settings, trigger: str, as_of: datetime, *, samples: int = 3) -> Preview:
    """Who would get which step at ``as_of``, why others would not, and rendered samples."""
    triggers, _ = project_triggers()
    spec = find_trigger(triggers, trigger)
    relation = PREVIEW_PREFIX + spec.relation
    policy = DispatchPolicy.from_values(settings.send_policy)
    higher = [PREVIEW_PREFIX + other.relation for other in higher_priority(spec, triggers)]
    result = Preview(trigger=spec.name, as_of=as_of.isoformat())
    renderer = Renderer()
    with _preview_tables(settings, as_of) as con:
        table = quote_relation(relation)
        for step, reason, count in con.execute(
            sql_for(con, "reports/preview_exclusions").format(eligibility=table)
        ).fetchall():
            result.excluded.setdefault(step, {})[reason] = count
        # The real planning step, in a transaction that is always rolled back.
        with ledger.planning(
            con,
            eligibility=relation,
            run_id="preview",
            as_of=as_of,
            provider="preview",
            cap_policy=spec.sequence.cap_policy,
            caps=policy.caps,
            competitors=higher,
        ) as decision:
            for step, variant, status, reason, count in con.execute(
                sql_for(con, "reports/preview_decisions")
            ).fetchall():
                key = "/".join(p for p in (step, variant) if p) + f": {status}"
                if reason:
                    key += f" ({reason})"
                result.decisions[key] = count
            rows = con.execute(sql_for(con, "reports/preview_samples"), {"n": samples}).fetchall()
            decision.hold()
    links = LinkSettings.from_env()
    for send_id, context_json in rows:
        context = json.loads(context_json)
        add_links(spec, links, send_id, context)
        try:
            email = renderer.render(context["template"], context)
            result.samples.append(
                {
                    "send_id": send_id,
                    "step": context["step"],
                    "to": mask_email(context.get("email") or ""),
                    "subject": email.subject,
                    "text": email.text,
                }
            )
        except RenderError as exc:
            result.samples.append({"send_id": send_id, "error": str(exc)})
    return result


@dataclass
class RenderedFiles:
    send_id: str
    exclusion_reason: str | None
    due_at: str
    files: list[Path]


def render_for_customer(
    settings: Settings,
    *,
    trigger: str,
    step: str,
    customer_id: str,
    as_of: datetime,
    out_dir: Path,
    variant: str | None = None,
) -> RenderedFiles:
    """Write the email one customer would get for one step as HTML, text and headers files."""
    triggers, _ = project_triggers()
    spec = find_trigger(triggers, trigger)
    steps = {s.name: s for s in spec.steps}
    if step not in steps:
        raise ConfigError(f"trigger {trigger} has no step {step!r}; its steps: {spec.step_names}")
    if variant and variant not in {v.name for v in steps[step].variants}:
        raise ConfigError(f"step {trigger}/{step} has no variant {variant!r}")
    relation = quote_relation(PREVIEW_PREFIX + spec.relation)
    with _preview_tables(settings, as_of) as con:
        found = one(
            con,
            sql_for(con, "reports/render_row").format(eligibility=relation),
            {"customer": customer_id, "step": step},
        )
    if found is None:
        raise ConfigError(
            f"customer {customer_id} has no {trigger}/{step} step around {as_of.isoformat()} "
            f"(not an entry of the trigger, or outside the eligibility window); try --as-of "
            f"an instant near when the step is due"
        )
    send_id, reason, due_at, context_json = found
    context = json.loads(context_json)
    template = context["template"]
    if variant:
        template = next(v.template for v in steps[step].variants if v.name == variant)
    # The links the real send would carry (the same token: it is made from the send_id).
    list_headers = add_links(spec, LinkSettings.from_env(), send_id, context)
    email = Renderer().render(template, context)
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = [
        f"From: {settings.from_email}",
        f"To: {context.get('email') or ''}",
        f"Subject: {email.subject}",
        *(f"{name}: {value}" for name, value in list_headers.items()),
        f"X-Nudge-Send-Id: {send_id}",
        f"X-Nudge-Trigger: {trigger}",
        f"X-Nudge-Step: {step}",
        f"X-Nudge-Template: {template}",
    ]
    files = [out_dir / "email.html", out_dir / "email.txt", out_dir / "headers.txt"]
    files[0].write_text(email.html)
    files[1].write_text(email.text)
    files[2].write_text("\n".join(headers) + "\n")
    return RenderedFiles(send_id, reason, due_at.isoformat(), files)
