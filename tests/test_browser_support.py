"""The browser helpers themselves: a person without JavaScript clicks a form's button."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.browser import chromium, click, page_without_js

FORM = b"""<!doctype html>
<html><head><title>form</title></head>
<body>
<div style="height: 3000px">a long page, so the button starts out of view</div>
<form method="post" action="/done">
  <input type="hidden" name="choice" value="yes please">
  <button id="go" type="submit">Go</button>
</form>
<p id="hidden" style="display: none"><button>Hidden</button></p>
<script>document.title = 'js ran'; console.error('script ran');</script>
</body></html>
"""


class _Site(ThreadingHTTPServer):
    posts: list[tuple[str, bytes]]


class _Handler(BaseHTTPRequestHandler):
    server: _Site

    def do_GET(self) -> None:
        if self.path == "/":
            self._answer(200, FORM)
        elif self.path == "/favicon.ico":  # browsers ask for one; a 404 is a console error
            self._answer(204, b"")
        else:
            self._answer(404, b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.posts.append((self.path, body))
        echoed = body.decode().replace("&", "&amp;").replace("<", "&lt;")
        page = (
            "<!doctype html><html><head><title>done</title></head><body>"
            f"<p>posted</p><pre id='body'>{echoed}</pre>"
            "<script>document.title = 'js ran'</script></body></html>"
        )
        self._answer(201, page.encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def site() -> Iterator[_Site]:
    chromium()  # skip (or fail under NUDGE_REQUIRE_BROWSER) before starting anything
    server = _Site(("127.0.0.1", 0), _Handler)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _root(site: _Site) -> str:
    host, port = site.server_address[:2]
    return f"http://{host!s}:{port}/"


def test_clicking_submit_without_javascript_posts_the_form_and_follows_the_answer(
    site: _Site,
) -> None:
    page = click(_root(site), "#go")

    assert page.url == _root(site) + "done"
    assert page.status == 201
    assert site.posts == [("/done", b"choice=yes+please")]
    assert "<p>posted</p>" in page.dom
    assert "choice=yes+please" in page.dom
    assert "<title>done</title>" in page.dom  # the answer's own script did not run either
    assert page.errors == []


def test_a_page_without_javascript_is_the_served_html(site: _Site) -> None:
    page = page_without_js(_root(site))

    assert page.url == _root(site)
    assert page.status == 200
    assert "<title>form</title>" in page.dom
    assert "js ran" not in page.dom.replace("document.title = 'js ran'", "")
    assert page.console == []
    assert site.posts == []


def test_with_javascript_the_scripts_run(site: _Site) -> None:
    page = click(_root(site), "#go", javascript=True)

    assert "<title>js ran</title>" in page.dom
    assert site.posts == [("/done", b"choice=yes+please")]


def test_a_selector_that_matches_nothing_or_nothing_visible_is_an_assertion(site: _Site) -> None:
    with pytest.raises(AssertionError, match=r"nothing matches '#missing'"):
        click(_root(site), "#missing")
    with pytest.raises(AssertionError, match=r"is not rendered"):
        click(_root(site), "#hidden button")
    assert site.posts == []
