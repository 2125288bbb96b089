"""The outbox provider: real RFC 5322 files, idempotent re-sends, and a browsable index."""

from __future__ import annotations

import email
import json
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from dagster_project.config import Settings
from dagster_project.providers import (
    Message,
    OutboxProvider,
    ProviderConfigError,
    build_provider,
    write_outbox_index_html,
)
from dagster_project.providers.outbox import read_outbox_index
from tests.support import factories
from tests.support.factories import unsubscribe_headers


def make_message(n: int = 1, **overrides: Any) -> Message:
    """The shared test message with non-ASCII bodies: the .eml encoding must keep them."""
    bodies = {
        "html": f"<html><body><p>Hello customer {n}, café ☕</p></body></html>",
        "text": f"Hello customer {n}, café ☕",
    }
    return factories.make_message(n, **{**bodies, **overrides})


def read_eml(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def index_lines(outbox: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (outbox / "index.jsonl").read_text().splitlines()]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def links_in(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.hrefs


def test_writes_a_parseable_multipart_eml_per_message(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    messages = [make_message(1), make_message(2, trigger="winback", step="day7")]

    results = provider.send(messages)

    assert [r.send_id for r in results] == ["send-0001", "send-0002"]
    assert all(r.status == "sent" and r.error is None for r in results)
    eml = tmp_path / "welcome" / "send-0001.eml"
    msg = read_eml(eml)
    assert msg["From"] == "Nudge Team <hello@nudge.example>"
    assert msg["To"] == "customer1@example.com"
    assert msg["Subject"] == "Welcome aboard #1 — café ☕"
    assert msg["Date"] is not None
    assert msg["X-Nudge-Send-Id"] == "send-0001"
    assert msg["X-Nudge-Trigger"] == "welcome"
    assert msg["X-Nudge-Step"] == "day0"
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    assert text_part.get_content().strip() == "Hello customer 1, café ☕"
    assert "<p>Hello customer 1, café ☕</p>" in html_part.get_content()
    # provider_message_id is the Message-ID, so events and files can be matched.
    assert results[0].provider_message_id == msg["Message-ID"]
    assert (tmp_path / "winback" / "send-0002.eml").is_file()
    # RFC 5322 line endings.
    assert b"\r\n" in eml.read_bytes()


def test_html_copy_next_to_the_eml_holds_the_rendered_body(tmp_path: Path) -> None:
    message = make_message(1)
    OutboxProvider(tmp_path).send([message])

    html_file = tmp_path / "welcome" / "send-0001.html"
    # utf-8-sig: the file starts with a BOM so browsers decode file:// pages as UTF-8.
    assert html_file.read_text(encoding="utf-8-sig") == message.html


def test_resending_a_send_id_overwrites_the_same_file(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    first = provider.send([make_message(1, subject="First")])
    second = provider.send([make_message(1, subject="Second")])

    folder = tmp_path / "welcome"
    # One .eml and one .html, no temp files left behind.
    assert sorted(p.name for p in folder.iterdir()) == ["send-0001.eml", "send-0001.html"]
    assert read_eml(folder / "send-0001.eml")["Subject"] == "Second"
    assert first[0].provider_message_id == second[0].provider_message_id
    # The index is an append-only log; the page shows the latest version once.
    assert [e["subject"] for e in index_lines(tmp_path)] == ["First", "Second"]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Second" in page and "First" not in page


def test_index_jsonl_has_one_masked_line_per_message(tmp_path: Path) -> None:
    OutboxProvider(tmp_path).send([make_message(1), make_message(2)])

    lines = index_lines(tmp_path)
    assert len(lines) == 2
    first = lines[0]
    assert {"send_id", "trigger", "step", "customer_id", "to", "subject", "path", "as_of"} <= set(
        first
    )
    assert first["send_id"] == "send-0001"
    assert first["customer_id"] == "cust-1"
    assert first["to"] == "c***@e***.com"
    assert first["path"] == "welcome/send-0001.eml"
    assert (tmp_path / first["path"]).is_file()
    assert first["as_of"].endswith("+00:00")  # no tick given: when it was written
    raw = (tmp_path / "index.jsonl").read_text()
    assert "customer1@example.com" not in raw


def test_index_html_links_resolve_and_everything_is_escaped(tmp_path: Path) -> None:
    hostile = make_message(
        3,
        trigger="promo<b>",
        subject='<script>alert("x")</script> & more',
    )
    OutboxProvider(tmp_path).send([make_message(1), make_message(2), hostile])

    page = tmp_path / "index.html"
    text = page.read_text(encoding="utf-8")
    hrefs = links_in(page)
    assert len(hrefs) == 6  # body link + .eml link per message
    for href in hrefs:
        assert (tmp_path / unquote(href)).is_file(), href
    assert {h for h in hrefs if h.endswith(".html")} >= {
        "welcome/send-0001.html",
        "welcome/send-0002.html",
    }
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in text
    assert "promo&lt;b&gt;" in text
    # Recipients are masked on the page.
    assert "customer1@example.com" not in text
    assert "c***@e***.com" in text


def test_write_index_page_function_and_method_agree(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    provider.send([make_message(1)])
    (tmp_path / "index.html").unlink()

    assert provider.write_index_page() == tmp_path / "index.html"
    assert write_outbox_index_html(tmp_path) == tmp_path / "index.html"
    assert "send-0001" in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_index_page_survives_a_torn_last_line(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    provider.send([make_message(1)])
    with open(tmp_path / "index.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"send_id": "half-writ')  # what a crash mid-append leaves

    page = provider.write_index_page().read_text(encoding="utf-8")
    assert "send-0001" in page


def test_empty_outbox_page_renders(tmp_path: Path) -> None:
    page = write_outbox_index_html(tmp_path / "new").read_text(encoding="utf-8")
    assert "No messages yet" in page


def test_a_write_failure_fails_only_that_message(tmp_path: Path) -> None:
    # A regular file where the trigger's folder should be: mkdir raises an OSError.
    (tmp_path / "broken").write_text("not a directory")
    messages = [make_message(1), make_message(2, trigger="broken"), make_message(3)]

    results = OutboxProvider(tmp_path).send(messages)

    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].error is not None
    assert "outbox write failed" in results[1].error
    assert results[1].provider_message_id is None
    assert (tmp_path / "welcome" / "send-0003.eml").is_file()
    assert [e["send_id"] for e in index_lines(tmp_path)] == ["send-0001", "send-0003"]


def test_a_header_injection_attempt_is_a_failed_result(tmp_path: Path) -> None:
    results = OutboxProvider(tmp_path).send(
        [make_message(1, subject="Hi\r\nBcc: victim@example.com"), make_message(2)]
    )
    assert [r.status for r in results] == ["failed", "sent"]
    assert not (tmp_path / "welcome" / "send-0001.eml").exists()


def test_the_eml_carries_unsubscribe_headers_exactly_as_given_and_only_when_given(
    tmp_path: Path,
) -> None:
    headers = unsubscribe_headers(1)
    results = OutboxProvider(tmp_path).send([make_message(1, headers=headers), make_message(2)])

    assert [r.status for r in results] == ["sent", "sent"]
    data = (tmp_path / "welcome" / "send-0001.eml").read_bytes()
    with_headers = read_eml(tmp_path / "welcome" / "send-0001.eml")
    raw = email.message_from_bytes(data, policy=policy.compat32)
    for name, value in headers.items():
        assert with_headers.get_all(name) == [value]
        # Folded only at a space, never RFC 2047-encoded: mail clients would not decode it.
        raw_values = raw.get_all(name) or []
        assert [re.sub(r"\r?\n(?=[ \t])", "", v) for v in raw_values] == [value]
    without = read_eml(tmp_path / "welcome" / "send-0002.eml")
    assert without["List-Unsubscribe"] is None
    assert without["List-Unsubscribe-Post"] is None


def test_an_extra_header_with_a_line_break_fails_its_message_alone(
    tmp_path: Path,
) -> None:
    injected = {"List-Unsubscribe": "<https://x.example/u/1>\r\nBcc: victim@example.com"}
    results = OutboxProvider(tmp_path).send([make_message(1, headers=injected), make_message(2)])

    assert [r.status for r in results] == ["failed", "sent"]
    assert "List-Unsubscribe has a line break (CR or LF)" in (results[0].error or "")
    assert not (tmp_path / "welcome" / "send-0001.eml").exists()
    assert [e["send_id"] for e in index_lines(tmp_path)] == ["send-0002"]


def test_hostile_ids_cannot_escape_the_outbox(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    message = make_message(1, trigger="../../etc", send_id="../passwd")

    results = OutboxProvider(outbox).send([message])

    assert results[0].status == "sent"
    written = [p for p in tmp_path.rglob("*.eml")]
    assert len(written) == 1
    assert written[0].resolve().is_relative_to(outbox.resolve())
    assert read_eml(written[0])["X-Nudge-Send-Id"] == "../passwd"
    # Different raw ids that clean to the same text still get different files.
    OutboxProvider(outbox).send([make_message(2, trigger="../../etc", send_id="..-passwd")])
    assert len(list(outbox.rglob("*.eml"))) == 2


def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    assert OutboxProvider(tmp_path / "o").send([]) == []
    assert not (tmp_path / "o").exists()


def test_build_provider_outbox_is_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"NUDGE_OUTBOX_DIR": str(tmp_path / "box")})
    provider = build_provider(settings.provider)
    assert isinstance(provider, OutboxProvider)
    assert provider.name == "outbox"
    assert provider.outbox_dir == tmp_path / "box"
    provider.close()


def test_build_provider_rejects_an_unknown_esp(tmp_path: Path) -> None:
    settings = Settings.from_env({"NUDGE_ESP": "mailchimp", "NUDGE_OUTBOX_DIR": str(tmp_path)})
    with pytest.raises(ProviderConfigError, match="valid choices: outbox, sendgrid"):
        build_provider(settings.provider)


def test_the_index_and_the_date_header_show_the_tick_not_the_time_of_writing(
    tmp_path: Path,
) -> None:
    """A replay of three days writes its files in minutes: the outbox must read as the days."""
    monday, tuesday = datetime(2026, 6, 1, 9, tzinfo=UTC), datetime(2026, 6, 2, 12, tzinfo=UTC)
    provider = OutboxProvider(tmp_path)
    # Written in tick order, as a replay writes them; the later tick's message is listed first.
    provider.send([make_message(1, as_of=monday, due_at=monday - timedelta(minutes=30))])
    provider.send([make_message(2, as_of=tuesday, due_at=tuesday - timedelta(hours=2))])

    assert read_eml(tmp_path / "welcome" / "send-0001.eml")["Date"] == format_datetime(monday)
    assert read_eml(tmp_path / "welcome" / "send-0002.eml")["Date"] == format_datetime(tuesday)
    entries = read_outbox_index(tmp_path)
    assert [(e["send_id"], e["as_of"], e["due_at"]) for e in entries] == [
        ("send-0002", tuesday.isoformat(), (tuesday - timedelta(hours=2)).isoformat()),
        ("send-0001", monday.isoformat(), (monday - timedelta(minutes=30)).isoformat()),
    ]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>", page)
    assert rows == [
        ("Tue 2026-06-02 12:00", "Tue 2026-06-02 10:00"),
        ("Mon 2026-06-01 09:00", "Mon 2026-06-01 08:30"),
    ]


def test_the_index_page_renders_in_a_browser_newest_tick_first(tmp_path: Path) -> None:
    from tests.support.browser import load

    ticks = [datetime(2026, 6, 1, h, tzinfo=UTC) for h in (9, 12, 15)]
    provider = OutboxProvider(tmp_path)
    for n, tick in enumerate(ticks, start=1):
        provider.send([make_message(n, as_of=tick, due_at=tick - timedelta(hours=1))])
    page = load((tmp_path / "index.html").as_uri(), screenshot=tmp_path / "index.png")
    assert page.errors == []
    cells = re.findall(r"<tr><td>(.*?)</td>", page.dom)
    assert cells == ["Mon 2026-06-01 15:00", "Mon 2026-06-01 12:00", "Mon 2026-06-01 09:00"]
    assert "<title>nudge outbox (3 messages)</title>" in page.dom
    assert (tmp_path / "index.png").stat().st_size > 5_000  # a real picture, not a blank page
