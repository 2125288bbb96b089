"""A real SMTP server on loopback (aiosmtpd) that records mail and misbehaves on request.

Usage::

    from tests.support.smtp_server import SmtpServer

    with SmtpServer(username="nudge", password="s3cret") as server:
        server.on_rcpt("b@example.com", ["451 4.3.0 Try again later"])  # next RCPT for b@
        server.on_data("c@example.com", ["drop"])      # hang up once the data has arrived
        provider = SmtpProvider("127.0.0.1", server.port, ...)
        ...
        assert [m.rcpt_tos for m in server.received] == [...]

Scripted replies apply, in order, to the next commands for that recipient; a recipient with
nothing scripted is accepted. DATA behaviours are a reply line (``"554 5.7.1 Spam"``),
``"drop"`` (close the connection without answering, after the whole message arrived) or
``"hang"`` (never answer; the client times out). Every connection's EHLO is recorded, so tests
can count connections; :meth:`SmtpServer.close_connections` hangs up on every client, as a
server does with idle connections.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_HANG_SECONDS = 60.0  # longer than any client timeout in the tests; cancelled on hang-up


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peer(session: Session) -> tuple[str, int]:
    """The client's (address, port); aiosmtpd types ``peer`` loosely."""
    peer: Any = session.peer
    return (str(peer[0]), int(peer[1])) if peer else ("?", 0)


@dataclass(frozen=True)
class ReceivedMail:
    """One message whose data reached the server (``answered`` False: it was dropped)."""

    peer: tuple[str, int]
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    answered: bool
    authenticated_as: str | None = None

    @property
    def message(self) -> EmailMessage:
        # SMTP lines end in CRLF; parse with Python's newlines so contents compare as text.
        parsed = email.message_from_bytes(
            self.data.replace(b"\r\n", b"\n"), policy=email.policy.default
        )
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Script:
    rcpt: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    data: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))


class _Handler:
    """aiosmtpd hooks; everything they record is read through :class:`SmtpServer`."""

    def __init__(self, server: SmtpServer) -> None:
        self.owner = server

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        self.owner._connected(session, server)
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.owner.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.owner._next("rcpt", address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        behaviour = None
        for rcpt in envelope.rcpt_tos:
            behaviour = behaviour or self.owner._next("data", rcpt)
        if behaviour is None:
            self.owner._record(session, envelope, answered=True)
            return "250 2.0.0 OK queued"
        if behaviour not in ("drop", "hang"):
            return behaviour  # a scripted error reply: nothing is queued
        self.owner._record(session, envelope, answered=False)
        if behaviour == "drop" and server.transport is not None:
            server.transport.close()
        # Hung up, or hanging: the client's disconnect cancels this wait.
        await asyncio.sleep(_HANG_SECONDS)
        return "451 4.3.0 too late"


class SmtpServer:
    """aiosmtpd on ``127.0.0.1:<free port>``; use as a context manager.

    ``username``/``password``: offer AUTH (PLAIN, LOGIN) and accept only these; with
    ``require_auth`` MAIL is refused (530) until authenticated. ``tls_context``: offer
    STARTTLS (AUTH is then only offered after it). Without TLS, AUTH is offered in clear,
    which is acceptable only because this is loopback.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        require_auth: bool = False,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.require_auth = require_auth
        self.port = free_port()
        self.auth_attempts: list[tuple[str, bool]] = []  # (login, accepted)
        self._lock = threading.Lock()
        self._script = _Script()
        self._received: list[ReceivedMail] = []
        self._connections: dict[tuple[str, int], SMTP] = {}
        self._ehlo_peers: list[tuple[str, int]] = []
        kwargs: dict[str, Any] = {
            "hostname": "127.0.0.1",
            "port": self.port,
            "server_hostname": "nudge-test-smtp",
            "ready_timeout": 5.0,
        }
        if username is not None:
            kwargs["authenticator"] = self._authenticate
            # Explicit: AUTH over plain text is deliberate here (loopback); over TLS if given.
            kwargs["auth_require_tls"] = tls_context is not None
        if tls_context is not None:
            kwargs["tls_context"] = tls_context
            kwargs["require_starttls"] = False
        self._controller = Controller(_Handler(self), **kwargs)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()

    # -- scripting and inspection ----------------------------------------------------------

    def on_rcpt(self, address: str, replies: Iterable[str]) -> None:
        """Answer the next RCPTs for ``address`` with these reply lines, in order."""
        with self._lock:
            self._script.rcpt[address.lower()].extend(replies)

    def on_data(self, address: str, behaviours: Iterable[str]) -> None:
        """For the next DATAs to ``address``: a reply line, ``"drop"`` or ``"hang"``."""
        with self._lock:
            self._script.data[address.lower()].extend(behaviours)

    @property
    def received(self) -> list[ReceivedMail]:
        """Messages whose data arrived, in order (dropped/unanswered ones included)."""
        with self._lock:
            return list(self._received)

    @property
    def connection_count(self) -> int:
        """Client connections that said EHLO/HELO, STARTTLS re-greetings not counted twice."""
        with self._lock:
            return len(set(self._ehlo_peers))

    def close_connections(self) -> None:
        """Hang up on every connected client, as a server does with idle ones."""
        with self._lock:
            servers = list(self._connections.values())
            self._connections.clear()
        loop = self._controller.loop
        done = threading.Event()

        def close_all() -> None:
            for server in servers:
                if server.transport is not None:
                    server.transport.close()
            done.set()

        loop.call_soon_threadsafe(close_all)
        done.wait(5)

    # -- called on the server's event loop -------------------------------------------------

    def _connected(self, session: Session, server: SMTP) -> None:
        peer = _peer(session)
        with self._lock:
            self._ehlo_peers.append(peer)
            self._connections[peer] = server

    def _next(self, kind: str, address: str) -> str | None:
        with self._lock:
            queue = getattr(self._script, kind).get(address.lower())
            return queue.popleft() if queue else None

    def _record(self, session: Session, envelope: Envelope, *, answered: bool) -> None:
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        mail = ReceivedMail(
            peer=_peer(session),
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            answered=answered,
            authenticated_as=login,
        )
        with self._lock:
            self._received.append(mail)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode()
        ok = (
            self.username is not None
            and self.password is not None
            and login == self.username
            and auth_data.password.decode() == self.password
        )
        with self._lock:
            self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)
