"""A provider that "sends" by writing ``.eml`` files, for local runs, demos and tests.

Nobody should need an ESP account to see what nudge would send. The outbox writes each message
as a real RFC 5322 file (open it in any mail client), a browser-friendly ``.html`` copy of its
HTML body, one JSON line in ``index.jsonl``, and an ``index.html`` page that lists them all.

Layout::

    outbox_dir/
        index.jsonl                     one line per send, append-only (re-sends add a line)
        index.html                      table of every message, newest tick first, links below
        <trigger>/<send_id>.eml         the message itself
        <trigger>/<send_id>.html        its HTML body, for a browser

It mirrors a real provider's contract so the pipeline cannot tell the difference: per-message
failures are ``failed`` results, never exceptions, and re-sending a ``send_id`` is harmless (the
same file is replaced atomically, the Message-ID is derived from the send_id so it is stable).

Times are the simulation's, not the wall clock's: a message's ``Date:`` header is the tick that
sent it (``as_of``), and the index lists each message with its tick and its step's due time, so
a replay of three days reads as three days, not as the few minutes it took to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dagster_project.masking import mask_email
from dagster_project.providers.base import (
    Journal,
    Message,
    ProviderLimits,
    SendResult,
    checked_headers,
)

logger = logging.getLogger(__name__)

INDEX_JSONL = "index.jsonl"
INDEX_HTML = "index.html"
MESSAGE_ID_DOMAIN = "outbox.nudge.invalid"

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")

# RFC 5322 section 2.1.1: lines SHOULD stay within 78 characters and MUST within 998.
_FOLD_AT = 78
_MAX_LINE = 998

# policy.SMTP (CRLF line endings) that writes pre-folded headers as they are: see
# add_verbatim_headers().
VERBATIM_SMTP_POLICY = policy.SMTP.clone(refold_source="none")


def _safe_component(value: str) -> str:
    """Turn a send_id or trigger into one safe path component (and Message-ID local part).

    Both come from the warehouse, so they are data, not trusted paths: "../x" must not escape
    the outbox. Clean values are kept as they are so files are easy to find; anything changed
    by cleaning gets a short hash suffix so two different raw values never share a file.
    """
    cleaned = _SAFE_CHARS.sub("_", value).lstrip(".") or "_"
    if cleaned == value:
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned[:100]}-{digest}"


def message_id_for(send_id: str) -> str:
    """The RFC 5322 Message-ID for a send: derived from send_id so a re-send keeps it."""
    return f"<{_safe_component(send_id)}@{MESSAGE_ID_DOMAIN}>"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file + ``os.replace``.

    A crash mid-write leaves at worst a stray temp file, never a truncated ``.eml`` that a
    later reader would take for a complete message. No fsync: this is a local preview outbox,
    and an fsync per file would make large batches crawl for protection against power loss only.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def sent_at(message: Message) -> datetime:
    """When the message counts as sent: its tick (``as_of``), or now outside a tick."""
    return message.as_of or datetime.now(UTC).replace(microsecond=0)


def fold_header(name: str, value: str) -> str:
    """``value`` folded to lines of at most 78 characters where it has spaces to fold at.

    A line break goes *before* an existing space (RFC 5322 folding), so unfolding gives back
    ``value`` exactly; a word longer than a line stays whole. Lines are joined with ``"\\n"``
    (the generator writes its policy's line separator). ``ValueError`` if a line would still
    exceed RFC 5322's hard limit of 998 characters.
    """
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}: {words[0]}"  # the first line carries "Name: "
    for word in words[1:]:
        candidate = f"{current} {word}"
        # Never break before an empty word: a run of spaces stays on one line.
        if len(candidate) > _FOLD_AT and word:
            lines.append(current)
            current = f" {word}"
        else:
            current = candidate
    lines.append(current)
    if any(len(line) > _MAX_LINE for line in lines):
        raise ValueError(f"header {name} has a word too long for one line (RFC 5322: 998)")
    return "\n".join(lines)[len(name) + 2 :]  # the value, after "Name: "


def add_verbatim_headers(mime: EmailMessage, headers: Mapping[str, str]) -> None:
    """Add a message's extra headers to ``mime`` exactly as given: checked
    (:func:`~dagster_project.providers.base.checked_headers`), folded only at spaces.

    The standard library's own folding turns any word longer than a line (a
    ``List-Unsubscribe`` URL with its token is one) into RFC 2047 encoded words, which mail
    clients do not decode in ``List-Unsubscribe``: one-click unsubscribe would break. So the
    values are stored pre-folded, and the message must be written with a policy whose
    ``refold_source`` is ``"none"`` (:data:`VERBATIM_SMTP_POLICY`), which leaves them so.
    Shared with the SMTP adapter. ``ValueError`` for a header that cannot be sent.
    """
    for name, value in checked_headers(headers):
        # set_raw stores the value as it is: assigning mime[name] would parse it into a header
        # object that folds itself (encoded words for long words) whatever the policy says.
        mime.set_raw(name, fold_header(name, value))


def build_email(message: Message, *, sent_at: datetime) -> EmailMessage:
    """Build the multipart/alternative RFC 5322 message for ``message``.

    The message's extra headers (``Message.headers``, e.g. ``List-Unsubscribe``) are added
    exactly as given, folded only at spaces: write the message with
    :data:`VERBATIM_SMTP_POLICY`, which keeps them so (see :func:`add_verbatim_headers`).

    Raises ``ValueError`` for values that cannot be headers (e.g. a subject with a newline, an
    extra header with a line break), which the caller turns into a failed result.
    """
    msg = EmailMessage()
    msg["From"] = message.from_email
    msg["To"] = message.to_email
    msg["Subject"] = message.subject
    msg["Date"] = format_datetime(sent_at)
    msg["Message-ID"] = message_id_for(message.send_id)
    msg["X-Nudge-Send-Id"] = message.send_id
    msg["X-Nudge-Trigger"] = message.trigger
    msg["X-Nudge-Step"] = message.step
    add_verbatim_headers(msg, message.headers)
    msg.set_content(message.text)
    msg.add_alternative(message.html, subtype="html")
    return msg


class OutboxProvider:
    """Write messages to ``outbox_dir`` instead of sending them."""

    name = "outbox"
    # A file named after the send_id: writing it twice leaves one email, so it is idempotent.
    limits = ProviderLimits(max_batch=1000, idempotent=True)

    def __init__(self, outbox_dir: Path) -> None:
        self.outbox_dir = Path(outbox_dir)
        # index.jsonl lines must not interleave if two threads share one provider.
        self._index_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OutboxProvider(outbox_dir={str(self.outbox_dir)!r})"

    def paths_for(self, message: Message) -> tuple[Path, Path]:
        """Return the ``(.eml, .html)`` paths a message is written to."""
        folder = self.outbox_dir / _safe_component(message.trigger)
        stem = _safe_component(message.send_id)
        return folder / f"{stem}.eml", folder / f"{stem}.html"

    def send(
        self,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        journal: Journal | None = None,
    ) -> list[SendResult]:
        """Write every message; one result per message, in input order.

        Also refreshes ``index.html`` once at the end, so the preview page is always current.
        Nothing goes over a network and rewriting a message is harmless, so the journal is
        not needed: a crash mid-batch leaves the rows planned, and the next tick rewrites them.
        """
        results = [self._write_one(m) for m in messages]
        if messages:
            try:
                self.write_index_page()
            except OSError as exc:
                # The messages themselves are written; a stale preview page is not a failed send.
                logger.warning("outbox: could not refresh %s: %s", INDEX_HTML, exc)
        return results

    def _write_one(self, message: Message) -> SendResult:
        tick = sent_at(message)
        eml_path, html_path = self.paths_for(message)
        try:
            email_msg = build_email(message, sent_at=tick)
            # CRLF line endings, per RFC 5322; extra headers written as they are.
            data = email_msg.as_bytes(policy=VERBATIM_SMTP_POLICY)
            atomic_write(eml_path, data)
            # A UTF-8 BOM makes browsers opening a file:// page decode it as UTF-8 even when the
            # template has no <meta charset>, so accented names do not turn into mojibake.
            atomic_write(html_path, message.html.encode("utf-8-sig"))
            self._append_index(
                {
                    "send_id": message.send_id,
                    "trigger": message.trigger,
                    "step": message.step,
                    "customer_id": message.customer_id,
                    "to": mask_email(message.to_email),
                    "subject": message.subject,
                    "path": eml_path.relative_to(self.outbox_dir).as_posix(),
                    "html_path": html_path.relative_to(self.outbox_dir).as_posix(),
                    "as_of": tick.isoformat(),
                    "due_at": message.due_at.isoformat() if message.due_at else None,
                }
            )
        except Exception as exc:  # one bad message must not stop the batch
            reason = f"outbox write failed: {type(exc).__name__}: {exc}"
            logger.warning(
                "outbox: send %s to %s failed: %s",
                message.send_id,
                mask_email(message.to_email),
                reason,
            )
            return SendResult(send_id=message.send_id, status="failed", error=reason)
        logger.debug("outbox: wrote send %s to %s", message.send_id, eml_path)
        return SendResult(
            send_id=message.send_id,
            status="sent",
            provider_message_id=message_id_for(message.send_id),
        )

    def _append_index(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        with (
            self._index_lock,
            open(self.outbox_dir / INDEX_JSONL, "a", encoding="utf-8") as fh,
        ):
            fh.write(line)

    def write_index_page(self) -> Path:
        """(Re)build ``index.html`` from ``index.jsonl``; return its path."""
        return write_outbox_index_html(self.outbox_dir)

    def close(self) -> None:
        """Nothing to release: files are closed after every write."""


def read_outbox_index(outbox_dir: Path) -> list[dict[str, Any]]:
    """Return the latest index entry per send_id, newest tick first (then by step due time).

    Skips lines that are not valid JSON objects: a crash during an append can leave a partial
    last line, and the preview page should still render everything else.
    """
    path = Path(outbox_dir) / INDEX_JSONL
    if not path.exists():
        return []
    latest: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and "send_id" in entry:
                latest[str(entry["send_id"])] = entry
    return sorted(latest.values(), key=_newest_first, reverse=True)


def _newest_first(entry: dict[str, Any]) -> tuple[str, str, str]:
    # Lines written before the tick was recorded carry only sent_at (a wall-clock time).
    tick = str(entry.get("as_of") or entry.get("sent_at") or "")
    return tick, str(entry.get("due_at") or ""), str(entry.get("send_id", ""))


def _when(value: Any) -> str:
    """An ISO instant as people read it in the index: ``2026-06-01 09:00`` (UTC)."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%a %Y-%m-%d %H:%M")


def _href(relative_path: str) -> str:
    return html.escape(quote(relative_path, safe="/"), quote=True)


def write_outbox_index_html(outbox_dir: Path) -> Path:
    """Build ``outbox_dir/index.html``: a table of every message with links to its body.

    Every value is HTML-escaped (subjects and triggers come from templates and the warehouse),
    and link targets are URL-quoted too. Recipients are shown masked: the page is meant to be
    shared in a chat or a screenshot.
    """
    outbox_dir = Path(outbox_dir)
    entries = read_outbox_index(outbox_dir)
    rows = []
    for e in entries:
        esc = {k: html.escape(str(e.get(k, "")), quote=True) for k in e}
        html_path = str(e.get("html_path") or str(e.get("path", "")).removesuffix(".eml") + ".html")
        tick = html.escape(_when(e.get("as_of") or e.get("sent_at")), quote=True)
        due = html.escape(_when(e.get("due_at")), quote=True)
        rows.append(
            "    <tr>"
            f"<td>{tick}</td>"
            f"<td>{due}</td>"
            f"<td>{esc.get('trigger', '')}</td>"
            f"<td>{esc.get('step', '')}</td>"
            f"<td>{esc.get('to', '')}</td>"
            f"<td>{esc.get('customer_id', '')}</td>"
            f'<td><a href="{_href(html_path)}">{esc.get("subject", "") or "(no subject)"}</a></td>'
            f'<td><a href="{_href(str(e.get("path", "")))}">.eml</a></td>'
            f"<td><code>{esc.get('send_id', '')}</code></td>"
            "</tr>"
        )
    body = "\n".join(rows) if rows else '    <tr><td colspan="9">No messages yet.</td></tr>'
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>nudge outbox ({len(entries)} messages)</title>
  <style>
    body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
    table {{ border-collapse: collapse; width: 100%; }}
    th, td {{ border-bottom: 1px solid #ddd; padding: .4rem .6rem; text-align: left; }}
    th {{ background: #f4f4f4; }}
    code {{ font-size: .85em; color: #555; }}
    td:nth-child(-n+2) {{ white-space: nowrap; }}  /* the tick and the due time */
  </style>
</head>
<body>
  <h1>nudge outbox</h1>
  <p>{len(entries)} messages written by the outbox provider, newest tick first. Times are
  UTC: the tick that sent each message (its <code>Date:</code> header) and when its step fell
  due.</p>
  <table>
    <thead><tr><th scope="col">Tick (UTC)</th><th scope="col">Step due (UTC)</th>
    <th scope="col">Trigger</th><th scope="col">Step</th><th scope="col">To</th>
    <th scope="col">Customer</th><th scope="col">Subject</th><th scope="col">File</th>
    <th scope="col">Send id</th></tr>
    </thead>
    <tbody>
{body}
    </tbody>
  </table>
</body>
</html>
"""
    target = outbox_dir / INDEX_HTML
    atomic_write(target, page.encode("utf-8"))
    return target
