"""A real headless browser (Debian's ``chromium``) for the pages nudge writes and serves.

:func:`load` opens a page the way a person's browser would and returns the DOM after scripts
ran plus every console message, so tests can assert that a page renders, shows the right
figures and logs no errors. :func:`click` and :func:`page_without_js` use a page the way a
person whose browser runs no JavaScript would: scripts off, a real mouse click on a button, the
browser itself submitting the form and following the answer. Without Chromium the tests that need
it skip with one reason, unless ``NUDGE_REQUIRE_BROWSER`` is set (``.ci/run`` sets it and
installs Chromium), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# What a headless Chromium needs on a closed, screenless machine (and as root).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
# Read once, at import (collection) time: tests/conftest.py's hermetic fixture removes every
# NUDGE_* variable before each test runs, this one included (as tests/support/spec_schemas.py).
_REQUIRE_BROWSER = os.environ.get("NUDGE_REQUIRE_BROWSER", "")
_CONSOLE = re.compile(r"CONSOLE\(\d+\)\] \"(?P<message>.*)\", source: (?P<source>.*)")
_DEVTOOLS = re.compile(r"DevTools listening on (ws://\S+)")
_STARTUP_S = 30.0  # how long Chromium may take to open its DevTools endpoint
_CALL_S = 30.0  # how long one DevTools command may take to answer


def chromium() -> str:
    """The browser's path, or skip (fail under NUDGE_REQUIRE_BROWSER) when there is none."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    reason = "no headless Chromium on PATH (apt install chromium)"
    required = os.environ.get("NUDGE_REQUIRE_BROWSER", _REQUIRE_BROWSER)
    if required.lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; NUDGE_REQUIRE_BROWSER is set")
    pytest.skip(f"{reason}; set NUDGE_REQUIRE_BROWSER=1 to require it")


@dataclass(frozen=True)
class Page:
    dom: str  # the document after scripts ran
    console: list[str]  # console messages, "message (source)"; "level: message (source)" via CDP
    url: str = ""  # the page's final address (click / page_without_js only)
    status: int | None = None  # HTTP status of the final document, when it came over HTTP

    @property
    def errors(self) -> list[str]:
        return [m for m in self.console if "error" in m.lower()]


def load(url: str, *, screenshot: Path | None = None, budget_ms: int = 5000) -> Page:
    """Open ``url`` (``file://`` or ``http://``) headless; the DOM, console and a screenshot."""
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="nudge-chromium-") as profile:
        common = [browser, *FLAGS, f"--user-data-dir={profile}"]
        common.append(f"--virtual-time-budget={budget_ms}")
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False
        )
        if screenshot is not None:
            subprocess.run(
                [*common, f"--screenshot={screenshot}", "--window-size=1280,1600", url],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
    if dom.returncode != 0:
        raise AssertionError(f"chromium failed on {url}: {dom.stderr[-2000:]}")
    console = [f"{m.group('message')} ({m.group('source')})" for m in _CONSOLE.finditer(dom.stderr)]
    return Page(dom=dom.stdout, console=console)


def page_without_js(url: str, *, budget_ms: int = 10000) -> Page:
    """Open ``url`` with JavaScript disabled; the DOM as served, console, final URL and status."""
    with _devtools(javascript=False) as tab:
        tab.navigate(url, budget_ms / 1000)
        return tab.snapshot()


def click(url: str, selector: str, *, javascript: bool = False, budget_ms: int = 10000) -> Page:
    """Open ``url`` (scripts off unless ``javascript``) and click ``selector`` with the mouse.

    The click is a real left-button press and release at the element's on-screen centre (after
    scrolling it into view), so the browser does what it would for a person: a submit button
    makes Chromium itself submit the form and load the answer. Returns that next page. Without
    JavaScript a click that loads no new page within ``budget_ms`` is an AssertionError; with it,
    in-page script may have handled the click, so the page as it stands then is returned.
    ``budget_ms`` bounds each wait for a page load (the first one and the one after the click).
    """
    with _devtools(javascript=javascript) as tab:
        tab.navigate(url, budget_ms / 1000)
        tab.click(selector, budget_ms / 1000, must_load=not javascript)
        return tab.snapshot()


class _DevToolsError(AssertionError):
    pass


class _Tab:
    """One page target of a Chromium, driven over the DevTools protocol (flat session)."""

    def __init__(self, ws: Any, session: str, ids: Iterator[int], *, javascript: bool) -> None:
        self._ws = ws
        self._session = session
        self._ids = ids  # one id sequence per connection
        self._events: deque[dict[str, Any]] = deque()
        self.console: list[str] = []
        self.status: int | None = None
        self._frame = ""  # the main frame's id, so its document's HTTP status is told apart
        for domain in ("Page", "DOM", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self._frame = self.call("Page.getFrameTree")["frameTree"]["frame"]["id"]
        if not javascript:
            self.call("Emulation.setScriptExecutionDisabled", value=True)

    # -- the wire ------------------------------------------------------------------------------

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return _call(self._ws, method, params, self._session, self._ids, self._on_event)

    def _on_event(self, message: dict[str, Any]) -> None:
        if message.get("sessionId") != self._session:
            return
        method, params = message["method"], message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            frames = (params.get("stackTrace") or {}).get("callFrames") or [{}]
            where = f"{frames[0].get('url', '')}:{frames[0].get('lineNumber', 0) + 1}"
            level = {"warning": "warning", "error": "error", "assert": "error"}.get(
                params.get("type", "log"), "log"
            )
            self.console.append(f"{level}: {text} ({where})")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = (details.get("exception") or {}).get("description") or details.get("text", "")
            where = f"{details.get('url', '')}:{details.get('lineNumber', 0) + 1}"
            self.console.append(f"error: {text} ({where})")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            where = entry.get("url") or entry.get("source", "")
            self.console.append(f"{entry.get('level', 'info')}: {entry.get('text', '')} ({where})")
        elif method == "Network.responseReceived":
            if params.get("type") == "Document" and params.get("frameId") == self._frame:
                self.status = params.get("response", {}).get("status")
        else:
            self._events.append(message)

    def _wait_for(self, method: str, timeout_s: float) -> bool:
        """Whether event ``method`` arrived (since the last clear) within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            if any(event["method"] == method for event in self._events):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                raw = self._ws.recv(timeout=remaining)
            except TimeoutError:
                return False
            message = json.loads(raw)
            if "method" in message:
                self._on_event(message)

    # -- what a person does --------------------------------------------------------------------

    def navigate(self, url: str, timeout_s: float) -> None:
        self._events.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise AssertionError(f"chromium could not open {url}: {result['errorText']}")
        if not self._wait_for("Page.loadEventFired", timeout_s):
            raise AssertionError(f"{url} did not finish loading within {timeout_s:g}s")

    def click(self, selector: str, timeout_s: float, *, must_load: bool) -> None:
        here = self.url()
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        try:
            node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        except _DevToolsError as error:
            raise AssertionError(f"bad selector {selector!r}: {error}") from None
        if not node:
            raise AssertionError(f"nothing matches {selector!r} on {here}")
        try:
            self.call("DOM.scrollIntoViewIfNeeded", nodeId=node)
            quad = self.call("DOM.getBoxModel", nodeId=node)["model"]["border"]
        except _DevToolsError as error:
            raise AssertionError(f"{selector!r} on {here} is not rendered: {error}") from None
        xs, ys = quad[0::2], quad[1::2]
        if max(xs) - min(xs) < 1 or max(ys) - min(ys) < 1:
            raise AssertionError(f"{selector!r} on {here} has no area to click")
        x, y = sum(xs) / len(xs), sum(ys) / len(ys)  # viewport coordinates, after scrolling
        self._events.clear()
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        if not self._wait_for("Page.loadEventFired", timeout_s) and must_load:
            raise AssertionError(
                f"clicking {selector!r} at ({x:.0f}, {y:.0f}) on {here} loaded no page within "
                f"{timeout_s:g}s (not a submit button or link, or covered by another element?)"
            )

    def url(self) -> str:
        return str(self.call("Page.getFrameTree")["frameTree"]["frame"]["url"])

    def snapshot(self) -> Page:
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        dom = self.call("DOM.getOuterHTML", nodeId=root)["outerHTML"]
        # Console events sent before these answers have been read by now (one ordered stream).
        return Page(dom=dom, console=list(self.console), url=self.url(), status=self.status)


def _call(
    ws: Any,
    method: str,
    params: dict[str, Any],
    session: str | None,
    ids: Iterator[int],
    on_event: Any,
) -> dict[str, Any]:
    """Send one DevTools command and return its result, handing events met on the way on."""
    ident = next(ids)
    message: dict[str, Any] = {"id": ident, "method": method, "params": params}
    if session is not None:
        message["sessionId"] = session
    ws.send(json.dumps(message))
    deadline = time.monotonic() + _CALL_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"chromium did not answer {method} within {_CALL_S:g}s")
        try:
            answer = json.loads(ws.recv(timeout=remaining))
        except TimeoutError:
            continue
        if answer.get("id") == ident:
            if "error" in answer:
                raise _DevToolsError(f"{method}: {answer['error'].get('message', answer['error'])}")
            return dict(answer.get("result", {}))
        if "method" in answer:
            on_event(answer)


def _remote_text(value: dict[str, Any]) -> str:
    if "value" in value:
        return str(value["value"])
    return str(value.get("description") or value.get("unserializableValue") or value.get("type"))


def _read_stderr(stream: IO[bytes], tail: deque[str], endpoint: queue.Queue[str | None]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        tail.append(line)
        found = _DEVTOOLS.search(line)
        if found:
            endpoint.put(found.group(1))
    endpoint.put(None)  # the browser (and every process holding its stderr) is gone


@contextlib.contextmanager
def _devtools(*, javascript: bool) -> Iterator[_Tab]:
    """A fresh headless Chromium with one tab under DevTools control; always ended afterwards."""
    from websockets.sync.client import connect

    browser = chromium()
    with tempfile.TemporaryDirectory(
        prefix="nudge-chromium-", ignore_cleanup_errors=True
    ) as profile:
        process = subprocess.Popen(
            [browser, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so every helper process ends with it
        )
        assert process.stderr is not None
        tail: deque[str] = deque(maxlen=40)
        endpoint: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(
            target=_read_stderr, args=(process.stderr, tail, endpoint), daemon=True
        )
        reader.start()
        ws = None
        try:
            try:
                address = endpoint.get(timeout=_STARTUP_S)
            except queue.Empty:
                address = None
            if address is None:
                log = "\n".join(tail)
                raise AssertionError(f"chromium opened no DevTools endpoint:\n{log}")
            ws = connect(address, proxy=None, max_size=None, open_timeout=_STARTUP_S)
            ids = iter(range(1, 1 << 62))

            def browser_call(method: str, **params: Any) -> dict[str, Any]:
                return _call(ws, method, params, None, ids, lambda _event: None)

            target = browser_call("Target.createTarget", url="about:blank")["targetId"]
            session = browser_call("Target.attachToTarget", targetId=target, flatten=True)
            yield _Tab(ws, session["sessionId"], ids, javascript=javascript)
        finally:
            asked = False
            if ws is not None:
                with contextlib.suppress(Exception):
                    ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
                    asked = True
                with contextlib.suppress(Exception):
                    ws.close()
            _end(process, asked=asked)
            reader.join(timeout=5)


def _end(process: subprocess.Popen[bytes], *, asked: bool) -> None:
    """End the browser and every process in its group, leaving nothing behind.

    ``/usr/bin/chromium`` execs the browser, so ``process.pid`` leads a process group (from
    ``start_new_session``) holding its zygotes, renderers and utility processes. It gets a moment
    to quit on its own (``Browser.close`` when ``asked``, else SIGTERM), then the whole group is
    killed. The zygotes it leaves ``<defunct>`` are reaped by init, as with :func:`load`.
    """
    if not asked:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    # Wait without reaping, so the group id stays ours while the rest of the group is killed.
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                break
        except ChildProcessError:
            break
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
