"""A real, local HTTP server that speaks enough of SendGrid's Mail Send API for tests.

Mocked transports cannot show connection reuse, real timeouts or real concurrency; a server on
127.0.0.1 can, and costs a few milliseconds to start. It records every request, answers 202 with
an ``X-Message-Id`` by default, and can be scripted to misbehave per request (429, 5xx, 400 with
a SendGrid-style error body, or a delay that trips the client's timeout).

Usage::

    from tests.esp_server import EspServer, Reply

    with EspServer(api_key="SG.test") as server:
        server.script([Reply(status=429, retry_after="1"), 202])   # next two requests
        server.script([400], send_id="s-3")                        # only requests for s-3
        provider = SendGridProvider("SG.test", server.url, ...)
        ...
        assert server.received_send_ids() == [...]

Script entries may be a :class:`Reply`, a bare status code (``500``), or a dict of ``Reply``
fields (``{"delay": 0.5}``). Requests with no scripted reply get the server's default reply
(``EspServer(default=Reply(delay=0.1))`` makes every request slow, e.g. to observe concurrency).

The ``esp_server`` fixture below can be imported into a conftest or a test module.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import pytest

SEND_PATH = "/v3/mail/send"

_DEFAULT_ERRORS: dict[int, str] = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "too many requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Reply:
    """How the server answers one request.

    ``errors`` is SendGrid's error list (``[{"message": ..., "field": ...}]``); for an error
    status without ``errors`` or ``body`` a default one-message list is sent. ``body`` overrides
    the JSON body with raw text (to test non-JSON error pages). ``delay`` is slept before
    answering, so a delay above the client timeout makes the client give up on this request.
    """

    status: int = 202
    retry_after: str | None = None
    errors: list[dict[str, Any]] | None = None
    body: str | bytes | None = None
    delay: float = 0.0
    include_message_id: bool = True

    @classmethod
    def coerce(cls, spec: ReplySpec) -> Reply:
        """Accept a Reply, a status code or a dict of Reply fields."""
        if isinstance(spec, Reply):
            return spec
        if isinstance(spec, int):
            return cls(status=spec)
        if isinstance(spec, Mapping):
            return cls(**spec)
        raise TypeError(f"cannot make a Reply from {spec!r}")


ReplySpec = Reply | int | Mapping[str, Any]


def bad_request(message: str, field: str | None = None, status: int = 400) -> Reply:
    """A SendGrid-style 4xx: ``{"errors": [{"message": message, "field": field}]}``."""
    return Reply(status=status, errors=[{"message": message, "field": field}])


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. Header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    reply: Reply
    received_at: float = 0.0  # time.monotonic() on arrival
    client_port: int = 0  # one port per TCP connection: shows keep-alive reuse

    @property
    def send_id(self) -> str | None:
        """``personalizations[0].custom_args.send_id``, if the body has one."""
        try:
            return str(self.body["personalizations"][0]["custom_args"]["send_id"])
        except (KeyError, IndexError, TypeError):
            return None


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 with Content-Length on every answer: clients keep connections alive and reuse
    # them, as they would against SendGrid.
    protocol_version = "HTTP/1.1"
    server_version = "nudge-test-esp"
    # Idle keep-alive connections give up after this, so no handler thread lingers forever.
    timeout = 5
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle + delayed ACK
    # add ~40 ms to every answer with a body.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        esp = self.server.esp
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = esp._begin(self.command, self.path, headers, raw, body, self.client_address[1])
        try:
            if reply.delay:
                esp._stopping.wait(reply.delay)
        finally:
            # Leave "in flight" before answering: once the client has the answer it may start
            # its next request, which must not be counted together with this one.
            esp._end()
        self._answer(reply)

    def _answer(self, reply: Reply) -> None:
        if reply.body is not None:
            payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
            content_type = "text/plain; charset=utf-8"
        elif reply.errors is not None or reply.status >= 400:
            errors = reply.errors
            if errors is None:
                message = _DEFAULT_ERRORS.get(reply.status, f"HTTP {reply.status}")
                errors = [{"message": message, "field": None}]
            payload = json.dumps({"errors": errors}).encode()
            content_type = "application/json"
        else:
            payload = b""  # SendGrid's 202 has an empty body
            content_type = ""
        try:
            self.send_response(reply.status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if 200 <= reply.status < 300 and reply.include_message_id:
                self.send_header("X-Message-Id", uuid.uuid4().hex[:22])
            if reply.retry_after is not None:
                self.send_header("Retry-After", reply.retry_after)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The client timed out and hung up while we were "slow": expected in timeout tests.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; every request is in ``EspServer.requests`` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, esp: EspServer, host: str) -> None:
        self.esp = esp
        super().__init__((host, 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return  # a client went away; normal with timeouts
        self.esp.errors.append(repr(exc))


class EspServer:
    """A scripted SendGrid stand-in on ``127.0.0.1:<free port>``; use as a context manager."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default: ReplySpec = 202,
        host: str = "127.0.0.1",
    ) -> None:
        """``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get 401."""
        self.api_key = api_key
        self.host = host
        self.errors: list[str] = []  # unexpected server-side exceptions; tests can assert empty
        self._default = Reply.coerce(default)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._per_send_id: dict[str, deque[Reply]] = {}
        self._in_flight = 0
        self._max_in_flight = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> EspServer:
        """Bind a free port and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self, self.host)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="esp-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes any handler sleeping on a ``delay``."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> EspServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting and inspection ----------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to hand to the provider, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("EspServer is not running")
        return f"http://{self.host}:{self._server.server_port}"

    def script(self, replies: Iterable[ReplySpec], *, send_id: str | None = None) -> None:
        """Queue replies for the next requests, in order.

        With ``send_id``, the replies apply only to requests carrying that
        ``custom_args.send_id`` (so one message of a concurrent batch can be made to fail).
        Per-send_id replies take precedence over the shared queue.
        """
        coerced = [Reply.coerce(r) for r in replies]
        with self._lock:
            if send_id is None:
                self._queue.extend(coerced)
            else:
                self._per_send_id.setdefault(send_id, deque()).extend(coerced)

    def set_default(self, reply: ReplySpec) -> None:
        """Change the reply for requests with nothing scripted."""
        with self._lock:
            self._default = Reply.coerce(reply)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def send_requests(self) -> list[RecordedRequest]:
        """Only the ``POST /v3/mail/send`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == SEND_PATH]

    def received_send_ids(self) -> list[str]:
        """send_ids of every Mail Send request, in arrival order, retries included."""
        return [r.send_id for r in self.send_requests() if r.send_id is not None]

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was handling at the same moment."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget recorded requests, scripts and the in-flight maximum."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._per_send_id.clear()
            self._max_in_flight = self._in_flight

    # -- called from handler threads -------------------------------------------------------

    def _begin(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, body: Any, port: int
    ) -> Reply:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            reply = self._choose(method, path, headers, body)
            self._requests.append(
                RecordedRequest(method, path, headers, raw, body, reply, time.monotonic(), port)
            )
            return reply

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _choose(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        """Pick the reply; caller holds the lock. Auth and routing errors consume no script."""
        if path != SEND_PATH:
            return Reply(status=404)
        if method != "POST":
            return Reply(status=405)
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(status=401)
        send_id = RecordedRequest(method, path, headers, b"", body, self._default).send_id
        per_id = self._per_send_id.get(send_id) if send_id is not None else None
        if per_id:
            return per_id.popleft()
        if self._queue:
            return self._queue.popleft()
        return self._default


@pytest.fixture
def esp_server() -> Iterator[EspServer]:
    """A running :class:`EspServer` that accepts any API key; stopped after the test."""
    with EspServer() as server:
        yield server
