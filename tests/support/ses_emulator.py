"""Two SES stand-ins for the SES adapter's tests.

* :func:`run_ses_emulator`: moto's server mode (``moto[server]``, a pinned dev dependency from
  PyPI), run in this process by :class:`moto.server.ThreadedMotoServer` on 127.0.0.1 and a port
  the OS picks. It speaks the SES v2 API (``POST /v2/email/outbound-emails``), refuses senders
  whose address or domain is not a verified identity (``MessageRejected``, as SES does in its
  sandbox), and shows what it accepted through its own introspection API,
  ``GET /moto-api/data.json`` (``POST /moto-api/reset`` empties every backend). For a simple
  email it keeps the sender, the destinations, the subject and *one* body (the HTML part when
  there is one, else the text); it does not check signatures and keeps neither ``EmailTags``,
  ``ConfigurationSetName`` nor custom headers, so those are checked against
  :class:`SesStubServer`.
* :class:`SesStubServer`: a tiny ``http.server`` on 127.0.0.1 that records every request
  (headers, body, client port) and answers as scripted, with SES-style JSON errors
  (``x-amzn-ErrorType`` header plus ``{"message": ...}``), delays or dropped connections.

* :func:`send_email_violations`: a ``SendEmail`` body checked against SES's published API
  model (botocore's ``sesv2`` service model, which the AWS SDKs are generated from; the shared
  specs folder has no SES spec), for what moto does not check.

Nothing here needs more than the ``dev`` extras: no Node.js, no network.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import socket
import sys
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# moto only routes on the credential scope of the signature; any key pair will do.
EMULATOR_ACCESS_KEY = "AKIDEXAMPLE0NUDGE0EMU"
EMULATOR_SECRET_KEY = "nudge-ses-emulator-secret"
VERIFIED_DOMAIN = "nudge.example"  # the domain of tests.support.factories' senders


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (released again: nothing listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SentEmail:
    """One email as moto stored it (``moto.ses.models.Message``)."""

    message_id: str
    source: str
    to: list[str]
    subject: str
    body: str  # moto keeps the HTML part when there is one, else the text part


@dataclass
class SesEmulator:
    """A running moto server: its base URL, and helpers for its identities and its store."""

    url: str
    region: str
    identities: list[str] = field(default_factory=list)

    def _call(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        """A signed SES v2 call, signed with fixed keys (never the developer's AWS setup)."""
        body = json.dumps(payload)
        request = AWSRequest(
            "POST", self.url + path, data=body, headers={"Content-Type": "application/json"}
        )
        credentials = Credentials(EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY)
        SigV4Auth(credentials, "ses", self.region).add_auth(request)
        return httpx.post(
            self.url + path, content=body, headers=dict(request.headers.items()), timeout=5
        )

    def verify(self, identity: str) -> None:
        """Make ``identity`` (an address or a domain) a verified sender: SES v2
        ``CreateEmailIdentity``, which moto verifies at once."""
        response = self._call("/v2/email/identities", {"EmailIdentity": identity})
        if response.status_code != 200:
            pytest.fail(f"moto refused CreateEmailIdentity {identity}: {response.text}")
        if identity not in self.identities:
            self.identities.append(identity)

    def emails(self) -> list[SentEmail]:
        """Every simple email moto accepted since the last :meth:`clear`, oldest first."""
        response = httpx.get(f"{self.url}/moto-api/data.json", timeout=5)
        response.raise_for_status()
        return [
            SentEmail(
                message_id=m["id"],
                source=m["source"],
                to=list(m["destinations"].get("ToAddresses", [])),
                subject=m["subject"],
                body=m["body"],
            )
            for m in response.json().get("ses", {}).get("Message", [])
        ]

    def clear(self) -> None:
        """Forget every stored email: moto resets all its state, so re-verify the senders."""
        httpx.post(f"{self.url}/moto-api/reset", timeout=5).raise_for_status()
        for identity in self.identities:
            self.verify(identity)


@contextlib.contextmanager
def run_ses_emulator(
    region: str, identities: Iterable[str] = (VERIFIED_DOMAIN,)
) -> Iterator[SesEmulator]:
    """Run moto's server on 127.0.0.1 (a port the OS picks) until the block ends, with the
    ``identities`` verified in ``region``. Its state starts empty.

    moto keeps its state in module globals, shared by every server in the process: run one at
    a time (the SES tests share one per session and :meth:`SesEmulator.clear` it per test).
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        emulator = SesEmulator(f"http://{host}:{port}", region)
        httpx.post(f"{emulator.url}/moto-api/reset", timeout=5).raise_for_status()
        for identity in identities:
            emulator.verify(identity)
        yield emulator
    finally:
        server.stop()


# -- the published API model -----------------------------------------------------------------


@functools.cache
def _send_email_input() -> Any:
    model = botocore.session.get_session().get_service_model("sesv2")
    return model.operation_model("SendEmail").input_shape


def send_email_violations(body: Any) -> list[str]:
    """Where a ``SendEmail`` JSON body breaks SES v2's published model: unknown or missing
    members, wrong types, and each string's and list's ``min``/``max``/``pattern``/``enum``
    (patterns matched against the whole value). Empty when the body is valid."""
    problems: list[str] = []

    def check(shape: Any, value: Any, where: str) -> None:
        meta = shape.metadata
        kind = shape.type_name
        if kind == "structure":
            if not isinstance(value, dict):
                problems.append(f"{where}: not an object")
                return
            for name in meta.get("required", []):
                if name not in value:
                    problems.append(f"{where}: {name} is required")
            for name, item in value.items():
                if name not in shape.members:
                    problems.append(f"{where}: unknown member {name}")
                else:
                    check(shape.members[name], item, f"{where}.{name}")
        elif kind == "list":
            if not isinstance(value, list):
                problems.append(f"{where}: not an array")
                return
            if not meta.get("min", 0) <= len(value) <= meta.get("max", len(value)):
                problems.append(f"{where}: {len(value)} items, outside {meta}")
            for i, item in enumerate(value):
                check(shape.member, item, f"{where}[{i}]")
        elif kind in ("string", "blob"):
            if not isinstance(value, str):
                problems.append(f"{where}: not a string")
                return
            if not meta.get("min", 0) <= len(value) <= meta.get("max", len(value)):
                problems.append(f"{where}: length {len(value)}, outside {meta}")
            if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
                problems.append(f"{where}: does not match {meta['pattern']!r}")
            if "enum" in meta and value not in meta["enum"]:
                problems.append(f"{where}: not one of {meta['enum']}")
        elif kind == "boolean" and not isinstance(value, bool):
            problems.append(f"{where}: not a boolean")

    check(_send_email_input(), body, "SendEmail")
    return problems


# -- a scripted SES stand-in for signatures and error classification -------------------------


@dataclass(frozen=True)
class SesReply:
    """How :class:`SesStubServer` answers one request.

    ``error``: an SES error code, sent as ``x-amzn-ErrorType`` with ``{"message": message}``.
    ``delay``: seconds to wait before answering (above the client timeout: a read timeout).
    ``drop``: close the connection without answering, after reading the whole request.
    ``garbled``: answer 2xx with a body that claims gzip and is not: the client fails reading
    the answer to a request SES took.
    """

    status: int = 200
    error: str | None = None
    message: str = ""
    delay: float = 0.0
    drop: bool = False
    garbled: bool = False


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
            if reply.garbled:
                self.send_header("Content-Encoding", "gzip")
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
