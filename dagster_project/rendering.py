"""Jinja2 rendering of ``templates/<template>.{subject,html,txt}.j2``.

A step's template is ``<trigger>/<step>`` (``<trigger>/<step>__<variant>`` for an A/B variant,
or whatever the YAML names); the ledger row records which one a send used.

Templates run in a sandbox with ``StrictUndefined``: a typo or a missing column is an error for
that row (recorded in the ledger), never an email with a blank where a name should be. Customer
data (names, product names) is passed as *values*, never compiled as template source, and HTML
parts are autoescaped, so ``<script>`` in a first name arrives as text.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    meta,
)
from jinja2.sandbox import SandboxedEnvironment

from .config import TEMPLATES_DIR

PARTS = ("subject", "html", "txt")


class RenderError(Exception):
    """One row could not be rendered; the message says which template and why."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def _money(value: Any, currency: str = "USD") -> str:
    """Format a price for display: ``12.5`` -> ``$12.50`` (other currencies as ``12.50 EUR``)."""
    if value is None:
        return ""
    amount = f"{float(value):,.2f}"
    return f"${amount}" if (currency or "USD").upper() == "USD" else f"{amount} {currency.upper()}"


def _date(value: Any, fmt: str = "%d %B %Y") -> str:
    """Format an ISO timestamp or date string from the eligibility row."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime(fmt)


class _Environment(SandboxedEnvironment):
    """The sandbox, with each template's globals in a plain dict rather than a ``ChainMap``.

    Jinja copies a template's globals into every context it makes (each part of an email, and
    each ``include`` again), and iterating a ``ChainMap`` builds a dict of all its maps every
    time: a fifth of rendering's time. nudge sets its globals before loading any template and
    never changes them, so a flat copy loses nothing.
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}


class Renderer:
    """Renders one trigger step for one eligibility row."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self.templates_dir = templates_dir
        self.env = _Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            # A Renderer lives for one push: templates do not change under it, and checking
            # every file's mtime on each render (and each include) cost a sixth of the time.
            auto_reload=False,
            # Unbounded, so a plain dict: each render looks its layout and includes up again
            # (``extends``, ``include``), and the default LRU cache takes a lock per lookup.
            cache_size=-1,
        )
        self.env.filters["money"] = _money
        self.env.filters["date"] = _date
        self._compiled: dict[str, tuple[tuple[str, Template], ...]] = {}
        self._reads: dict[str, frozenset[str] | None] = {}

    def template_names(self, template: str) -> dict[str, str]:
        return {part: f"{template}.{part}.j2" for part in PARTS}

    def check(self, template: str) -> None:
        """Fail fast, before anything is planned, when a step's templates are missing or broken."""
        for name in self.template_names(template).values():
            try:
                self.env.get_template(name)
            except TemplateNotFound:
                raise RenderError(f"template {self.templates_dir / name} is missing") from None
            except TemplateError as exc:
                raise RenderError(f"template {name} does not compile: {exc}") from exc

    def _parts(self, template: str) -> tuple[tuple[str, Template], ...]:
        """The step's three compiled templates, looked up once per Renderer."""
        compiled = self._compiled.get(template)
        if compiled is None:
            loaded = []
            for part, name in self.template_names(template).items():
                try:
                    loaded.append((part, self.env.get_template(name)))
                except Exception as exc:
                    raise RenderError(f"{name}: {type(exc).__name__}: {exc}") from exc
            compiled = self._compiled[template] = tuple(loaded)
        return compiled

    def reads(self, template: str, variable: str) -> bool:
        """Whether the step's templates, with the layouts and partials they use, read
        ``variable``; True when that cannot be known (a template name computed at render time,
        a template that does not parse: rendering reports that one).

        So a value that costs something to make (a signed link) is made only for the emails
        that show it.
        """
        if template not in self._reads:
            self._reads[template] = self._variables(self.template_names(template).values())
        names = self._reads[template]
        return names is None or variable in names

    def _variables(self, roots: Any) -> frozenset[str] | None:
        found: set[str] = set()
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            try:
                source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
                ast = self.env.parse(source)
                # Code generation, which can refuse a template that parsed (a block defined
                # twice): rendering fails those rows one by one, this must not fail the push.
                found |= meta.find_undeclared_variables(ast)
                referenced = list(meta.find_referenced_templates(ast))
            except Exception:
                return None
            if None in referenced:  # {% include some_variable %}
                return None
            todo.extend(name for name in referenced if name is not None)
        return frozenset(found)

    def render(self, template: str, context: dict[str, Any]) -> RenderedEmail:
        """Render the three parts; raise :class:`RenderError` naming the part and the cause."""
        parts: dict[str, str] = {}
        for part, compiled_part in self._parts(template):
            try:
                parts[part] = compiled_part.render(context)
            except Exception as exc:  # any template failure is this row's failure
                raise RenderError(f"{compiled_part.name}: {type(exc).__name__}: {exc}") from exc
        # A subject is one header line: collapse whitespace so a newline in customer data can
        # never inject headers.
        subject = " ".join(parts["subject"].split())
        if not subject:
            raise RenderError(f"{template}.subject.j2 rendered an empty subject")
        return RenderedEmail(subject=subject, html=parts["html"], text=parts["txt"].strip() + "\n")


def context_from_json(context_json: str) -> dict[str, Any]:
    """The template variables of a ledger row: every column of its eligibility row."""
    context = json.loads(context_json)
    if not isinstance(context, dict):
        raise RenderError("ledger context is not a JSON object")
    return context
