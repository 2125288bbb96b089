"""Two SES stand-ins for the SES adapter's tests.

* fixture ``ses_emulator``: the npm package ``aws-ses-v2-local`` (installed by ``make
  ses-emulator`` into ``.nudge/node``) run as a subprocess on a free loopback port. It speaks
  the SES v2 API (``POST /v2/email/outbound-emails``) and lists what it received at
  ``GET /store`` (``POST /clear-store`` empties it, ``GET /health-check`` answers 200). It
  checks only that an ``Authorization: AWS...`` header is present and does not keep
  ``EmailTags``, so signatures and tags are checked against :class:`SesStubServer`.
* :class:`SesStubServer`: a tiny ``http.server`` on 127.0.0.1 that records every request
  (headers, body, client port) and answers as scripted, with SES-style JSON errors
  (``x-amzn-ErrorType`` header plus ``{"message": ...}``), delays or dropped connections.

Without the emulator the fixture skips with the command to run, or fails when ``CI`` is set so
a CI run cannot silently lose the contract test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EMULATOR_PACKAGE = ROOT / ".nudge" / "node" / "node_modules" / "aws-ses-v2-local"
INSTALL_HINT = "the SES emulator is not installed; run `make ses-emulator` (needs Node 20 + npm)"
_STARTUP_SECONDS = 15.0


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (released, so the emulator can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _emulator_command(port: int) -> list[str] | None:
    """``node <cli.js> --host 127.0.0.1 --port N``, or None when node/the package is missing."""
    node = shutil.which("node")
    manifest = EMULATOR_PACKAGE / "package.json"
    if node is None or not manifest.is_file():
        return None
    bin_field = json.loads(manifest.read_text()).get("bin")
    cli = bin_field.get("aws-ses-v2-local") if isinstance(bin_field, dict) else bin_field
    if not cli or not (EMULATOR_PACKAGE / cli).is_file():
        return None
    return [node, str(EMULATOR_PACKAGE / cli), "--host", "127.0.0.1", "--port", str(port)]


def _missing_emulator() -> None:
    if os.environ.get("CI"):
        pytest.fail(INSTALL_HINT, pytrace=False)
    pytest.skip(INSTALL_HINT)


@dataclass
class SesEmulator:
    """A running emulator: its base URL and helpers for its store."""

    url: str

    def emails(self) -> list[dict[str, Any]]:
        """Every email the emulator accepted, oldest first."""
        response = httpx.get(f"{self.url}/store", timeout=5)
        response.raise_for_status()
        return list(response.json()["emails"])

    def clear(self) -> None:
        httpx.post(f"{self.url}/clear-store", timeout=5).raise_for_status()


@contextlib.contextmanager
def run_ses_emulator() -> Iterator[SesEmulator]:
    """Run ``aws-ses-v2-local`` on a free loopback port until the block ends.

    Skips the calling test when the emulator is not installed, or fails it when ``CI`` is set.
    """
    port = free_port()
    command = _emulator_command(port)
    if command is None:
        _missing_emulator()
        return
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + _STARTUP_SECONDS
            while True:
                if proc.poll() is not None:
                    output.seek(0)
                    log = output.read().decode(errors="replace")
                    pytest.fail(f"SES emulator exited with {proc.returncode}:\n{log}")
                try:
                    if httpx.get(f"{url}/health-check", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"SES emulator did not answer on {url} in {_STARTUP_SECONDS}s")
                time.sleep(0.05)
            yield SesEmulator(url)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture(scope="session", name="ses_emulator")
def ses_emulator_fixture() -> Iterator[SesEmulator]:
    """:func:`run_ses_emulator` once per test session, as fixture ``ses_emulator``.

    Import ``ses_emulator_fixture`` into a test module to use it. Tests share one process, so
    each should :meth:`SesEmulator.clear` the store first (or filter by what it sent).
    """
    with run_ses_emulator() as emulator:
        yield emulator


# -- a scripted SES stand-in for signatures and error classification -------------------------


@dataclass(frozen=True)
class SesReply:
    """How :class:`SesStubServer` answers one request.

    ``error``: an SES error code, sent as ``x-amzn-ErrorType`` with ``{"message": message}``.
    ``delay``: seconds to wait before answering (above the client timeout: a read timeout).
    ``drop``: close the connection without answering, after reading the whole request.
    """

    status: int = 200
    error: str | None = None
    message: str = ""
    delay: float = 0.0
    drop: bool = False


@dataclass(frozen=True)
class StubRequest:
    """One request as the stub saw it; header names lower-cased."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    client_port: int

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    disable_nagle_algorithm = True
    server: _StubHTTPServer

    def do_POST(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = stub._record(StubRequest("POST", path, query, headers, raw, self.client_address[1]))
        if reply.delay:
            stub._stopping.wait(reply.delay)
        if reply.drop:
            self.close_connection = True
            return
        if reply.status < 300:
            payload = json.dumps({"MessageId": f"stub-{uuid.uuid4().hex[:16]}"}).encode()
        else:
            payload = json.dumps({"message": reply.message or f"HTTP {reply.status}"}).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if reply.error:
                self.send_header("x-amzn-ErrorType", f"{reply.error}:http://internal.amazon.com/")
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up first (timeout tests)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are in ``SesStubServer.requests``."""


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, stub: SesStubServer) -> None:
        self.stub = stub
        super().__init__(("127.0.0.1", 0), _StubHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            self.stub.errors.append(repr(exc))


class SesStubServer:
    """Scripted SES endpoint on ``127.0.0.1:<free port>``; use as a context manager."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._requests: list[StubRequest] = []
        self._queue: deque[SesReply] = deque()
        self._stopping = threading.Event()
        self._server = _StubHTTPServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> SesStubServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def script(self, replies: Iterable[SesReply | int]) -> None:
        """Queue replies for the next requests; unscripted requests get 200."""
        with self._lock:
            self._queue.extend(r if isinstance(r, SesReply) else SesReply(r) for r in replies)

    @property
    def requests(self) -> list[StubRequest]:
        with self._lock:
            return list(self._requests)

    def _record(self, request: StubRequest) -> SesReply:
        with self._lock:
            self._requests.append(request)
            return self._queue.popleft() if self._queue else SesReply()
