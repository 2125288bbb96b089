"""From a ledger row to a :class:`~dagster_project.providers.Message`: render, links, limits.

A planned row carries its eligibility row as JSON (the template context). Composing it renders
the step's template, signs its unsubscribe and confirm links, and checks its size; a row that
cannot become an email is a permanent failure with the reason, never an exception that stops
the batch. Nothing here reads or writes the warehouse: it is the pure part of a push, which
``nudge preview`` and the benchmarks reuse as is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .links import LinkSettings
from .providers.base import Message, SendResult
from .rendering import Renderer, RenderError, context_from_json
from .triggers import TriggerSpec

# A batch rendered: the messages to send, and a failed result for each row that could not be.
Rendered = tuple[list[Message], list[SendResult]]


def render_batch(
    spec: TriggerSpec,
    renderer: Renderer,
    batch: Sequence[tuple[str, str]],
    from_email: str,
    *,
    links: LinkSettings | None = None,
    max_message_bytes: int | None = None,
) -> Rendered:
    """Render a batch of ``(send_id, context json)``; a row that fails is a permanent failure.

    ``links`` makes the template variables ``unsubscribe_url`` (marketing, with the RFC 8058
    headers on the message) and ``confirm_url`` (for templates that show it); without them a
    marketing template that shows its unsubscribe link fails to render, rather than send a dead
    link. A message bigger than ``max_message_bytes`` (HTML + text) is not sent either: mail
    clients clip it (Gmail above about 102 KB) and it means a template or a data bug.
    """
    messages: list[Message] = []
    failures: list[SendResult] = []
    for send_id, context_json in batch:
        try:
            context = context_from_json(context_json)
            message = compose_message(spec, renderer, send_id, context, from_email, links)
        except (RenderError, json.JSONDecodeError) as exc:
            failures.append(
                SendResult(send_id=send_id, status="failed", error=f"render: {exc}", attempts=0)
            )
            continue
        size = message.size()
        if max_message_bytes is not None and size > max_message_bytes:
            failures.append(
                SendResult(
                    send_id=send_id,
                    status="failed",
                    reason="message_too_large",
                    error=f"the rendered message is {size} bytes, over the limit of "
                    f"{max_message_bytes} (NUDGE_MAX_MESSAGE_BYTES)",
                    attempts=0,
                )
            )
            continue
        messages.append(message)
    return messages, failures


def compose_message(
    spec: TriggerSpec,
    renderer: Renderer,
    send_id: str,
    context: dict[str, Any],
    from_email: str,
    links: LinkSettings | None = None,
) -> Message:
    email = context.get("email")
    if not email:
        raise RenderError("the eligibility row has no email")
    step = str(context.get("step") or spec.steps[0].name)
    template = context.get("template") or f"{spec.name}/{step}"
    if template not in spec.templates:
        # The row was built by another version of the trigger's YAML: never guess a template.
        raise RenderError(
            f"template {template!r} is not one of trigger {spec.name}'s steps or variants "
            f"({', '.join(spec.templates)})"
        )
    headers = (
        add_links(spec, links, send_id, context, confirm=renderer.reads(template, "confirm_url"))
        if links is not None
        else {}
    )
    rendered = renderer.render(template, context)
    custom_args = {"send_id": send_id, "trigger": spec.name, "step": step}
    if context.get("variant"):
        custom_args["variant"] = str(context["variant"])
    return Message(
        send_id=send_id,
        trigger=spec.name,
        step=step,
        customer_id=str(context.get("customer_id")),
        to_email=email,
        from_email=from_email,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        custom_args=custom_args,
        headers=headers,
        as_of=_instant(context.get("as_of")),
        due_at=_instant(context.get("due_at")),
    )


def add_links(
    spec: TriggerSpec,
    links: LinkSettings,
    send_id: str,
    context: dict[str, Any],
    *,
    confirm: bool = True,
) -> dict[str, str]:
    """Put ``unsubscribe_url`` (marketing) and ``confirm_url`` in a send's template context;
    return the headers the message carries (RFC 8058's, for marketing).

    ``confirm=False`` leaves ``confirm_url`` out, for a template that never shows it: signing
    it was a tenth of rendering an email that has no use for it.
    """
    if not context.get("customer_id"):
        raise RenderError("the eligibility row has no customer_id to sign its links for")
    customer_id = str(context["customer_id"])
    headers: dict[str, str] = {}
    if spec.category == "marketing":
        url = links.unsubscribe_url(customer_id, spec.consent_list, send_id)
        context["unsubscribe_url"] = url
        headers = links.unsubscribe_headers(url)
    # Issued at the tick, so a send resent after a crash renders the same link.
    issued = _instant(context.get("as_of"))
    if confirm and issued is not None:
        context["confirm_url"] = links.confirm_url(customer_id, spec.consent_list, issued)
    return headers


def _instant(value: Any) -> datetime | None:
    """A timestamp from the context JSON (an ISO string), in UTC; None when absent or bad."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
