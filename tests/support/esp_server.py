"""A real, local HTTP server that speaks enough of four sending APIs for tests.

Mocked transports cannot show connection reuse, real timeouts, dropped connections or real
concurrency; a server on 127.0.0.1 can, and costs a few milliseconds to start. One server
answers every dialect, told apart by path:

================  =====================  ===================================================
dialect           path                   success answer
================  =====================  ===================================================
``sendgrid``      ``/v3/mail/send``      202, empty body, ``X-Message-Id``
``postmark``      ``/email/batch``       200, one ``{ErrorCode, MessageID, ...}`` per message
``resend``        ``/emails/batch``      200, ``{"data": [{"id"}]}``; honours Idempotency-Key
``webhook``       ``/nudge/webhook``     200, ``{"results": [{send_id, status, ...}]}``
================  =====================  ===================================================

It records every request (with the send_ids it carried), and it knows which send_ids it
*accepted* and how often (:meth:`EspServer.accepted_counts`): a 2xx that did not fail that
message, including answers that were then lost (a delay past the client's timeout, a dropped
connection), but not an idempotent replay. That is what a fault-injection test compares with
the ledger: every ``sent`` row accepted exactly once, nothing accepted twice.

Usage::

    from tests.support.esp_server import EspServer, Reply

    with EspServer(api_key="SG.test") as server:
        server.script([Reply(status=429, retry_after="1"), 202])   # next two requests
        server.script([400], send_id="s-3")                        # only requests carrying s-3
        server.fail_message("s-7", "inactive recipient", code=406) # a bad row, every time
        server.random_faults(rate=0.2, seed=1)                     # chaos for the rest
        provider = SendGridProvider("SG.test", server.url, ...)
        ...
        assert server.received_send_ids() == [...]

Script entries may be a :class:`Reply`, a bare status code (``500``), or a dict of ``Reply``
fields (``{"delay": 0.5}``). A request takes, in order: an idempotent replay (Resend), a reply
scripted for one of its send_ids, the shared script queue, a random fault, else the default
reply (``EspServer(default=Reply(delay=0.1))`` makes every request slow). Per-message failures
(:meth:`EspServer.fail_message`) apply to every 2xx answer: Postmark and the webhook report
them per message; SendGrid and Resend reject the whole request, as those APIs do.

The ``esp_server`` fixture below can be imported into a conftest or a test module.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import pytest

from dagster_project.providers.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_webhook_signature,
)

# At import, i.e. at collection: spec_schemas reads its NUDGE_* settings before conftest clears
# them for each test.
from tests.support import spec_schemas

SEND_PATH = "/v3/mail/send"  # SendGrid's; kept under this name for older tests
SENDGRID_PATH = SEND_PATH
POSTMARK_PATH = "/email/batch"
RESEND_PATH = "/emails/batch"
WEBHOOK_PATH = "/nudge/webhook"
DIALECTS: dict[str, str] = {
    SENDGRID_PATH: "sendgrid",
    POSTMARK_PATH: "postmark",
    RESEND_PATH: "resend",
    WEBHOOK_PATH: "webhook",
}
IDEMPOTENCY_TTL = 24 * 3600.0  # Resend keeps keys for 24 hours

FAULT_KINDS = (
    "429",  # 429 with Retry-After
    "429_no_retry_after",
    "500",
    "503",
    "slow",  # answers after slow_delay (within the client's timeout)
    "timeout",  # accepted, answered after timeout_delay (past the client's timeout)
    "drop",  # accepted, then the connection is closed without an answer
    "drop_unprocessed",  # connection closed without an answer, nothing accepted
    "message_failed",  # one message of the request becomes a bad row, rejected from now on
)

_DEFAULT_ERRORS: dict[int, str] = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "API key is invalid",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Same idempotency key used with a different request payload.",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "too many requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_POSTMARK_CODES = {401: 10, 422: 300, 429: 429, 500: 500, 503: 100}
_RESEND_NAMES = {
    400: "validation_error",
    401: "missing_api_key",
    403: "invalid_api_key",
    404: "not_found",
    409: "invalid_idempotent_request",
    422: "validation_error",
    429: "rate_limit_exceeded",
    500: "internal_server_error",
}
_SUCCESS_STATUS = {"sendgrid": 202, "postmark": 200, "resend": 200, "webhook": 200}


@dataclass(frozen=True)
class Reply:
    """How the server answers one request.

    ``status``: ``None`` means the dialect's success (202 for SendGrid, 200 otherwise).
    ``errors`` is SendGrid's error list (``[{"message": ..., "field": ...}]``); other dialects
    use its first message in their own error shape, with ``code`` as Postmark's ``ErrorCode``
    or Resend's error ``name``. ``body`` is a raw text body and ``json_body`` a JSON one,
    either replacing the dialect's. ``delay`` is slept before answering, so a delay above the
    client timeout makes the client give up. ``drop`` closes the connection instead of
    answering, *after* the request was processed: with a 2xx status the server accepted it.
    """

    status: int | None = None
    retry_after: str | None = None
    errors: list[dict[str, Any]] | None = None
    body: str | bytes | None = None
    delay: float = 0.0
    include_message_id: bool = True
    json_body: Any = None
    code: int | str | None = None
    drop: bool = False
    headers: Mapping[str, str] | None = None

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
    """A 4xx whose message is ``message`` (SendGrid: ``{"errors": [{message, field}]}``)."""
    return Reply(status=status, errors=[{"message": message, "field": field}])


def request_send_ids(dialect: str, body: Any) -> tuple[str, ...]:
    """Every send_id a request body carries, in body order (where each dialect puts it)."""
    found: list[Any] = []
    try:
        if dialect == "sendgrid":
            found = [p["custom_args"]["send_id"] for p in body["personalizations"]]
        elif dialect == "postmark":
            found = [m["Metadata"]["send_id"] for m in body]
        elif dialect == "resend":
            for email in body:
                tags = {t["name"]: t["value"] for t in email.get("tags", [])}
                found.append(tags["send_id"])
        elif dialect == "webhook":
            found = [m["send_id"] for m in body["messages"]]
    except (KeyError, IndexError, TypeError, AttributeError):
        return ()
    return tuple(str(s) for s in found)


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
    dialect: str = "sendgrid"
    send_ids: tuple[str, ...] = ()
    status: int = 0  # the status answered (or that would have been, for a dropped answer)
    accepted: tuple[str, ...] = ()  # send_ids this request delivered (not replays)
    replayed: bool = False  # answered from the idempotency store
    answer: bytes = b""  # the body answered (or that would have been, for a dropped answer)

    @property
    def send_id(self) -> str | None:
        """The first send_id the request carries, if any."""
        return self.send_ids[0] if self.send_ids else None

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class _Answer:
    """What the handler writes back (or not, when dropped)."""

    status: int
    headers: list[tuple[str, str]]
    payload: bytes
    delay: float = 0.0
    drop: bool = False
    accepted: tuple[str, ...] = ()
    replayed: bool = False


@dataclass
class _Failure:
    error: str
    code: int | str | None
    remaining: int | None  # None: every time


@dataclass
class _Stored:
    body_hash: str
    answer: _Answer
    stored_at: float


@dataclass
class _Faults:
    rate: float
    seed: int
    kinds: tuple[str, ...]
    retry_after: str
    slow_delay: float
    timeout_delay: float
    seen: Counter[str] = field(default_factory=Counter)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 with Content-Length on every answer: clients keep connections alive and reuse
    # them, as they would against a real ESP.
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
        answer = esp._begin(self.command, self.path, headers, raw, body, self.client_address[1])
        try:
            if answer.delay:
                esp._stopping.wait(answer.delay)
        finally:
            # Leave "in flight" before answering: once the client has the answer it may start
            # its next request, which must not be counted together with this one.
            esp._end()
        if answer.drop:
            # Close without a byte of answer: the client sees a dropped connection.
            self.close_connection = True
            return
        try:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.payload)))
            self.end_headers()
            self.wfile.write(answer.payload)
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
    """A scripted SendGrid/Postmark/Resend/webhook stand-in; use as a context manager."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default: ReplySpec | None = None,
        host: str = "127.0.0.1",
        webhook_secret: str | None = None,
        validate: bool | Iterable[str] = False,
        idempotent_dialects: Sequence[str] = ("resend",),
    ) -> None:
        """``api_key``: when set, SendGrid/Resend requests need ``Authorization: Bearer
        <api_key>`` and Postmark ones ``X-Postmark-Server-Token: <api_key>``, else 401/403.
        ``webhook_secret``: when set, webhook requests need a valid signature, else 401.
        ``validate``: check bodies against the published schemas (``tests/spec_schemas``)
        and answer a violation as the ESP would (400/422); violations land in
        ``schema_violations``. ``True`` checks every dialect whose schema is at hand; a list
        of dialects checks those, and their specs are required where ``NUDGE_REQUIRE_SPECS``
        is set (the server fails to start without them). A dialect whose published spec is
        missing otherwise goes unchecked; ``validated_dialects`` lists those checked.
        ``idempotent_dialects``: which dialects honour Idempotency-Key.
        """
        self.api_key = api_key
        self.host = host
        self.webhook_secret = webhook_secret
        self.validate: bool | frozenset[str] = (
            validate if isinstance(validate, bool) else frozenset(validate)
        )
        self.idempotent_dialects = frozenset(idempotent_dialects)
        self.errors: list[str] = []  # unexpected server-side exceptions; tests can assert empty
        self.schema_violations: list[str] = []
        self.validated_dialects: frozenset[str] = frozenset()  # set by start() when validating
        self._default = Reply.coerce(default if default is not None else Reply())
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._per_send_id: dict[str, deque[Reply]] = {}
        self._failures: dict[str, _Failure] = {}
        self._faults: _Faults | None = None
        self._idempotency: dict[str, _Stored] = {}
        self._accepted: Counter[str] = Counter()
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
        if self.validate:
            # Parse the specs now, not inside the first request's answer time.
            if self.validate is True:
                self.validated_dialects = spec_schemas.warm_up()
            else:
                available = spec_schemas.warm_up(required=self.validate)
                self.validated_dialects = available & self.validate
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

    # -- scripting -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to hand to the provider, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("EspServer is not running")
        return f"http://{self.host}:{self._server.server_port}"

    @property
    def webhook_url(self) -> str:
        """The full URL of the webhook dialect's endpoint."""
        return self.url + WEBHOOK_PATH

    def script(self, replies: Iterable[ReplySpec], *, send_id: str | None = None) -> None:
        """Queue replies for the next requests, in order.

        With ``send_id``, the replies apply only to requests carrying that send_id (so one
        message of a concurrent batch can be made to fail). Per-send_id replies take precedence
        over the shared queue.
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

    def fail_message(
        self,
        send_id: str,
        error: str = "You tried to send to recipient(s) that have been marked as inactive.",
        *,
        code: int | str | None = None,
        times: int | None = None,
    ) -> None:
        """Reject this message whenever it is in an otherwise successful request.

        Postmark answers it with ``ErrorCode`` ``code`` (default 406) and the webhook with
        ``status: failed``; SendGrid and Resend reject the whole request (400 / 422), as their
        all-or-nothing batches do. ``times``: only the next ``times`` requests (default: all).
        """
        with self._lock:
            self._failures[send_id] = _Failure(error, code, times)

    def random_faults(
        self,
        rate: float,
        *,
        seed: int = 0,
        kinds: Sequence[str] = FAULT_KINDS,
        retry_after: str = "1",
        slow_delay: float = 0.05,
        timeout_delay: float = 1.0,
    ) -> None:
        """Answer a ``rate`` share of unscripted requests with a fault drawn from ``kinds``.

        The draw is seeded by ``seed``, the request body and how often that exact body was
        seen before, so it does not depend on which worker thread arrives first: the same
        run meets the same faults. ``timeout_delay`` must exceed the client's timeout.
        ``rate=0`` turns faults off.
        """
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; valid: {FAULT_KINDS}")
        with self._lock:
            self._faults = (
                _Faults(rate, seed, tuple(kinds), retry_after, slow_delay, timeout_delay)
                if rate > 0
                else None
            )

    # -- inspection ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def send_requests(self, dialect: str | None = None) -> list[RecordedRequest]:
        """POSTs to a send endpoint (of ``dialect``, or of any)."""
        return [
            r
            for r in self.requests
            if r.method == "POST"
            and r.dialect in _SUCCESS_STATUS
            and (dialect is None or r.dialect == dialect)
        ]

    def received_send_ids(self, dialect: str | None = None) -> list[str]:
        """send_ids of every send request, in arrival order, retries and replays included."""
        return [s for r in self.send_requests(dialect) for s in r.send_ids]

    def accepted_counts(self) -> Counter[str]:
        """How many times each send_id was accepted (delivered), replays not counted."""
        with self._lock:
            return Counter(self._accepted)

    def accepted_send_ids(self) -> set[str]:
        return set(self.accepted_counts())

    def duplicate_deliveries(self) -> dict[str, int]:
        """send_ids accepted more than once: what must never happen."""
        return {s: n for s, n in self.accepted_counts().items() if n > 1}

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was handling at the same moment."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget recorded requests, acceptances, scripts, failures, faults and the in-flight
        maximum. The idempotency store is kept, as the real service would keep it."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._per_send_id.clear()
            self._failures.clear()
            self._faults = None
            self._accepted.clear()
            self.schema_violations.clear()
            self._max_in_flight = self._in_flight

    # -- called from handler threads -------------------------------------------------------

    def _begin(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, body: Any, port: int
    ) -> _Answer:
        # Validation imports jsonschema and reads the specs: keep it outside the lock.
        dialect = DIALECTS.get(path.split("?", 1)[0], "unknown")
        violation = self._schema_violation(dialect, body) if self.validate else None
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            send_ids = request_send_ids(dialect, body)
            reply, answer = self._decide(method, path, dialect, headers, raw, send_ids, violation)
            self._accepted.update(answer.accepted)
            self._requests.append(
                RecordedRequest(
                    method,
                    path,
                    headers,
                    raw,
                    body,
                    reply,
                    time.monotonic(),
                    port,
                    dialect,
                    send_ids,
                    answer.status,
                    answer.accepted,
                    answer.replayed,
                    answer.payload,
                )
            )
            return answer

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _schema_violation(self, dialect: str, body: Any) -> str | None:
        from jsonschema import ValidationError

        if dialect not in self.validated_dialects:
            return None
        try:
            spec_schemas.validate_request_body(dialect, body)
        except ValidationError as exc:
            return f"{dialect}: {exc.message}"
        return None

    def _decide(
        self,
        method: str,
        path: str,
        dialect: str,
        headers: dict[str, str],
        raw: bytes,
        send_ids: tuple[str, ...],
        violation: str | None,
    ) -> tuple[Reply, _Answer]:
        """Pick the reply and build the answer; caller holds the lock.

        Routing, auth and schema errors consume no script.
        """
        if dialect == "unknown":
            return self._error_answer("sendgrid", Reply(status=404))
        if method != "POST":
            return self._error_answer(dialect, Reply(status=405))
        refused = self._auth_error(dialect, headers, raw)
        if refused is not None:
            return self._error_answer(dialect, refused)
        if violation is not None:
            self.schema_violations.append(violation)
            status = 400 if dialect in ("sendgrid", "webhook") else 422
            return self._error_answer(dialect, bad_request(violation, status=status))

        key = headers.get("idempotency-key")
        idempotent = key is not None and dialect in self.idempotent_dialects
        body_hash = hashlib.sha256(raw).hexdigest()
        if idempotent:
            assert key is not None
            stored = self._idempotency.get(key)
            if stored is not None and time.monotonic() - stored.stored_at < IDEMPOTENCY_TTL:
                if stored.body_hash != body_hash:
                    return self._error_answer(dialect, Reply(status=409))
                replay = replace(stored.answer, delay=0.0, drop=False, accepted=(), replayed=True)
                return Reply(status=replay.status), replay

        reply = self._scripted(send_ids)
        if reply is None:
            reply = self._random_fault(raw, send_ids)
        if reply is None:
            reply = self._default

        status = reply.status or _SUCCESS_STATUS[dialect]
        if status >= 300:
            reply_used, answer = self._error_answer(dialect, reply)
        else:
            reply_used, answer = reply, self._success_answer(dialect, reply, send_ids)
        answer.delay, answer.drop = reply.delay, reply.drop
        if idempotent and 200 <= answer.status < 300:
            assert key is not None
            self._idempotency[key] = _Stored(body_hash, answer, time.monotonic())
        return reply_used, answer

    def _auth_error(self, dialect: str, headers: dict[str, str], raw: bytes) -> Reply | None:
        if dialect == "webhook":
            if self.webhook_secret is None:
                return None
            ok = verify_webhook_signature(
                self.webhook_secret,
                raw,
                headers.get(TIMESTAMP_HEADER.lower()),
                headers.get(SIGNATURE_HEADER.lower()),
            )
            return None if ok else bad_request("invalid signature", status=401)
        if self.api_key is None:
            return None
        if dialect == "postmark":
            if headers.get("x-postmark-server-token") == self.api_key:
                return None
            return Reply(
                status=401,
                errors=[{"message": "Request does not contain a valid Server token."}],
                code=10,
            )
        authorization = headers.get("authorization")
        if authorization == f"Bearer {self.api_key}":
            return None
        if dialect == "resend" and authorization:
            return Reply(status=403)
        return Reply(status=401)

    def _scripted(self, send_ids: tuple[str, ...]) -> Reply | None:
        for send_id in send_ids:
            queued = self._per_send_id.get(send_id)
            if queued:
                return queued.popleft()
        if self._queue:
            return self._queue.popleft()
        return None

    def _random_fault(self, raw: bytes, send_ids: tuple[str, ...]) -> Reply | None:
        faults = self._faults
        if faults is None:
            return None
        digest = hashlib.sha256(raw).hexdigest()
        seen = faults.seen[digest]
        faults.seen[digest] += 1
        rng = random.Random(f"{faults.seed}:{digest}:{seen}")
        if rng.random() >= faults.rate:
            return None
        kind = rng.choice(faults.kinds)
        if kind == "429":
            return Reply(status=429, retry_after=faults.retry_after)
        if kind == "429_no_retry_after":
            return Reply(status=429)
        if kind in ("500", "503"):
            return Reply(status=int(kind))
        if kind == "slow":
            return Reply(delay=faults.slow_delay)
        if kind == "timeout":
            return Reply(delay=faults.timeout_delay)
        if kind == "drop":
            return Reply(drop=True)
        if kind == "drop_unprocessed":
            return Reply(status=503, drop=True)
        # message_failed: a bad row, as fail_message() would make it; the answer is otherwise
        # the normal one (per-message failure, or a rejected all-or-nothing request).
        if send_ids:
            bad = rng.choice(send_ids)
            self._failures.setdefault(bad, _Failure("rejected by fault injection", None, None))
        return None

    def _failing(self, send_ids: tuple[str, ...]) -> dict[str, _Failure]:
        """Per-message failures that apply to this request (consuming limited ones)."""
        failing: dict[str, _Failure] = {}
        for send_id in send_ids:
            failure = self._failures.get(send_id)
            if failure is None:
                continue
            if failure.remaining is not None:
                if failure.remaining <= 0:
                    continue
                failure.remaining -= 1
            failing[send_id] = failure
        return failing

    def _success_answer(self, dialect: str, reply: Reply, send_ids: tuple[str, ...]) -> _Answer:
        status = reply.status or _SUCCESS_STATUS[dialect]
        extra = list((reply.headers or {}).items())
        if reply.retry_after is not None:
            extra.append(("Retry-After", reply.retry_after))
        if reply.body is not None or reply.json_body is not None:
            # A hand-written answer: the test decides what it means; count it all accepted.
            raw, content_type = _raw_payload(reply)
            headers = [("Content-Type", content_type), *extra]
            return _Answer(status, headers, raw, accepted=send_ids)

        failing = self._failing(send_ids)
        if failing and dialect in ("sendgrid", "resend"):
            # All-or-nothing batches: one bad row rejects the request.
            bad_index = next(i for i, s in enumerate(send_ids) if s in failing)
            rejected = failing[send_ids[bad_index]]
            status = 400 if dialect == "sendgrid" else 422
            rejection = Reply(
                status=status,
                errors=[
                    {
                        "message": rejected.error,
                        "field": f"personalizations.{bad_index}.to.0.email",
                    }
                ],
                code=rejected.code,
            )
            return self._error_answer(dialect, rejection)[1]

        payload: Any
        accepted = tuple(s for s in send_ids if s not in failing)
        headers = [("Content-Type", "application/json"), *extra]
        if dialect == "sendgrid":
            headers = extra
            if reply.include_message_id:
                headers.append(("X-Message-Id", uuid.uuid4().hex[:22]))
            return _Answer(status, headers, b"", accepted=accepted)
        if dialect == "postmark":
            now = datetime.now(UTC).isoformat()
            rows: list[dict[str, Any]] = []
            for send_id in send_ids:
                failure = failing.get(send_id)
                if failure is None:
                    rows.append(
                        {
                            "ErrorCode": 0,
                            "Message": "OK",
                            "MessageID": str(uuid.uuid4()),
                            "SubmittedAt": now,
                        }
                    )
                else:
                    code = failure.code if failure.code is not None else 406
                    rows.append({"ErrorCode": code, "Message": failure.error})
            payload = rows
        elif dialect == "resend":
            payload = {"data": [{"id": str(uuid.uuid4())} for _ in send_ids]}
        else:
            payload = {
                "results": [
                    {"send_id": s, "status": "failed", "error": failing[s].error}
                    if s in failing
                    else {"send_id": s, "status": "sent", "message_id": uuid.uuid4().hex}
                    for s in send_ids
                ]
            }
        return _Answer(status, headers, json.dumps(payload).encode(), accepted=accepted)

    def _error_answer(self, dialect: str, reply: Reply) -> tuple[Reply, _Answer]:
        status = reply.status or 500
        headers = list((reply.headers or {}).items())
        if reply.retry_after is not None:
            headers.append(("Retry-After", reply.retry_after))
        if reply.body is not None or reply.json_body is not None:
            payload, content_type = _raw_payload(reply)
            return reply, _Answer(status, [("Content-Type", content_type), *headers], payload)
        message = _DEFAULT_ERRORS.get(status, f"HTTP {status}")
        if reply.errors and reply.errors[0].get("message"):
            message = str(reply.errors[0]["message"])
        data: Any
        if dialect == "postmark":
            code = reply.code if reply.code is not None else _POSTMARK_CODES.get(status, status)
            data = {"ErrorCode": code, "Message": message}
        elif dialect == "resend":
            fallback = "internal_server_error" if status >= 500 else "error"
            name = reply.code if reply.code is not None else _RESEND_NAMES.get(status, fallback)
            data = {"statusCode": status, "name": name, "message": message}
        elif dialect == "webhook":
            data = {"error": message}
        else:
            data = {"errors": reply.errors or [{"message": message, "field": None}]}
        headers.insert(0, ("Content-Type", "application/json"))
        return reply, _Answer(status, headers, json.dumps(data).encode())


def _raw_payload(reply: Reply) -> tuple[bytes, str]:
    if reply.body is not None:
        payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
        return payload, "text/plain; charset=utf-8"
    return json.dumps(reply.json_body).encode(), "application/json"


# -- helpers shared by the provider tests -------------------------------------------------


@pytest.fixture
def esp_server() -> Iterator[EspServer]:
    """A running :class:`EspServer` that accepts any API key; stopped after the test."""
    with EspServer() as server:
        yield server
