"""SMTP adapter: the standard library's smtplib, one reused connection per worker thread.

Design notes (the why):

* The fan-out over worker threads, the retry loop and the batch stop are shared with SES
  (``fanout.py``); this module says how one message is prepared and tried.
* One SMTP transaction (MAIL, RCPT, DATA) per message on a connection each worker keeps open
  across messages and ``send()`` calls: the TCP + TLS + AUTH handshake costs several round
  trips, the transaction one or two. A connection the server closed while idle shows up as a
  disconnect *before* the message is handed over; the worker reconnects and carries on,
  without counting an attempt.
* What happened is judged by where the transaction stopped. A 2xx after the data is sent: the
  server took responsibility. 4xx (and 421, the server closing): transient, retried with
  backoff, then ``failed`` retryable. 5xx: permanent, with the server's own words. A
  disconnect or timeout once ``DATA`` has been issued: ``unknown``, because the server may have
  queued the message and SMTP has no idempotency key, so it is never resent.
* Connection set-up problems that no retry fixes (AUTH rejected, STARTTLS required but not
  offered, a certificate that does not verify) are not any message's fault: the first one stops
  the rest of the batch without further connections (no lockout from hammering AUTH), and all
  end ``failed`` *retryable*, so a later tick sends them once the configuration is fixed.
* TLS: ``starttls=True`` (default) requires STARTTLS, ``None`` uses it when offered, ``False``
  never; ``ssl=True`` is implicit TLS (port 465). The password is never sent unencrypted except
  to a loopback relay, and never appears in an error, a log line or ``repr``.
* The Message-ID is derived from the send_id, so the same send always carries the same id: a
  duplicate delivered after an ``unknown`` can be recognised (some mailbox providers even fold
  them), and bounces that quote it join back to the ledger, as does ``X-Nudge-Send-Id``.
* The message's extra headers (``Message.headers``: ``List-Unsubscribe`` and RFC 8058's
  ``List-Unsubscribe-Post`` on marketing mail) go on the MIME message exactly as given, folded
  only at spaces, never RFC 2047-encoded (the outbox's ``add_verbatim_headers`` says why); a
  value with a line break fails that message alone, before any connection.
"""

from __future__ import annotations

import base64
import email.policy
import ipaddress
import logging
import random
import re
import smtplib
import ssl as ssl_lib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from dagster_project.masking import mask_emails_in_text
from dagster_project.providers.base import Message, ProviderConfigError
from dagster_project.providers.fanout import Attempt, FanoutProvider, Unsendable
from dagster_project.providers.outbox import add_verbatim_headers
from dagster_project.providers.redaction import REDACTED
from dagster_project.providers.retry import Fate, check_tuning

logger = logging.getLogger(__name__)

# 7bit: non-ASCII or long-lined bodies go out quoted-printable, so no server needs 8BITMIME,
# and minified HTML cannot break SMTP's 998-character line limit.
# refold_source="none": the extra headers are stored pre-folded and written as they are.
_POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")
_ATEXT_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _envelope_address(value: str, field: str) -> str:
    _, addr = parseaddr(value)
    if not addr or "@" not in addr:
        raise ValueError(f"{field} is not an email address")
    if not addr.isascii():
        raise ValueError(f"{field} is not ASCII (SMTPUTF8 is not supported)")
    return addr


def make_message_id(send_id: str, from_addr: str) -> str:
    """``<send_id@sender-domain>``: deterministic per send, with a FQDN as spam filters like."""
    local = _ATEXT_UNSAFE.sub("-", send_id).strip(".") or "send"
    domain = from_addr.rpartition("@")[2] or "nudge.invalid"
    return f"<{local}@{domain}>"


def build_mime_message(message: Message, *, date: str | None = None) -> EmailMessage:
    """A MIME message: multipart/alternative (text, then HTML) or a single part if only one.

    Raises ``ValueError`` when the message cannot be sent (bad address, no body, a header
    value with a line break, an extra header ``base.checked_headers`` refuses).
    """
    from_addr = _envelope_address(message.from_email, "from_email")
    _envelope_address(message.to_email, "to_email")
    if not message.text and not message.html:
        raise ValueError("message has neither a text nor an HTML body")
    mime = EmailMessage(policy=_POLICY)
    mime["From"] = message.from_email
    mime["To"] = message.to_email
    mime["Subject"] = message.subject
    mime["Date"] = date or formatdate(usegmt=True)  # when it is handed over, not the tick
    mime["Message-ID"] = make_message_id(message.send_id, from_addr)
    mime["X-Nudge-Send-Id"] = message.send_id
    add_verbatim_headers(mime, message.headers)
    if message.text and message.html:
        mime.set_content(message.text)
        mime.add_alternative(message.html, subtype="html")
    elif message.html:
        mime.set_content(message.html, subtype="html")
    else:
        mime.set_content(message.text)
    return mime


@dataclass(frozen=True)
class _Attempt:
    fate: Fate
    reason: str = ""
    # The server had closed the connection before anything was handed over: reconnect and
    # try again, which is no attempt at the message.
    stale: bool = False


class _SetupFailure(Exception):
    """Connecting, STARTTLS or AUTH failed; ``fatal`` when retrying cannot help."""

    def __init__(self, reason: str, *, fatal: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


@dataclass
class _Job:
    """One message on its way: its envelope and bytes, and whether it already reconnected."""

    from_addr: str
    to_addr: str
    data: bytes
    message_id: str
    reconnected: bool = False


def _reply_text(code: int, resp: bytes | str) -> str:
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    return f"SMTP {code} {' '.join(text.split())}".strip()


def _classify_reply(code: int) -> Fate:
    # 4xx and anything unexpected below 500 delivered nothing: try again later.
    return "permanent" if code >= 500 else "transient"


class SmtpProvider(FanoutProvider[_Job]):
    """Send messages through an SMTP relay (a local MTA, or an ESP's SMTP endpoint)."""

    name = "smtp"
    uncertain_who = "the server"
    uncertain_verb = "queued"
    fatal_label = "cannot use the server"

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool | None = True,
        ssl: bool = False,
        timeout: float = 10.0,
        max_concurrency: int = 4,
        max_attempts: int = 3,
        requests_per_second: float | None = None,
        local_hostname: str | None = None,
        ssl_context: ssl_lib.SSLContext | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the provider; raises :class:`ProviderConfigError` before any send if unusable.

        ``ssl_context`` defaults to a verifying context (tests pass one trusting their own
        certificate). ``sleep``, ``jitter`` and ``clock`` are injectable so tests need not wait.
        """
        host = (host or "").strip()
        if not host or any(c.isspace() for c in host):
            raise ProviderConfigError(f"SMTP host must be a host name or address, got {host!r}")
        if not 0 < port < 65536:
            raise ProviderConfigError(f"SMTP port must be 1-65535, got {port}")
        if bool(username) != bool(password):
            raise ProviderConfigError("SMTP username and password must be given together")
        check_tuning(timeout, max_concurrency, max_attempts, requests_per_second)
        if username and not ssl and starttls is False and not _is_loopback(host):
            raise ProviderConfigError(
                "SMTP AUTH without TLS would send the password in clear text; "
                "use starttls=True (port 587) or ssl=True (port 465)"
            )

        super().__init__(
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            requests_per_second=requests_per_second,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            sleep=sleep,
            jitter=jitter,
            clock=clock,
        )
        self.host = host
        self.port = port
        self.username = username or None
        self.starttls = starttls
        self.ssl = ssl
        self.local_hostname = local_hostname
        self._password = password or None
        self._secrets = self._secret_forms(username, password)
        self._ssl_context = ssl_context or ssl_lib.create_default_context()
        self._local = threading.local()
        self._connections: set[smtplib.SMTP] = set()
        self._connections_lock = threading.Lock()

    @staticmethod
    def _secret_forms(username: str | None, password: str | None) -> list[str]:
        """The password as text and as it crosses the wire (AUTH LOGIN and PLAIN base64)."""
        if not password:
            return []
        plain = f"\0{username or ''}\0{password}".encode()
        forms = [
            password,
            base64.b64encode(password.encode()).decode(),
            base64.b64encode(plain).decode(),
        ]
        return sorted({f for f in forms if f}, key=len, reverse=True)

    def __repr__(self) -> str:
        return (
            f"SmtpProvider(host={self.host!r}, port={self.port}, username={self.username!r}, "
            f"password={'<hidden>' if self._password else None}, starttls={self.starttls}, "
            f"ssl={self.ssl}, timeout={self.timeout}, max_concurrency={self.max_concurrency}, "
            f"max_attempts={self.max_attempts})"
        )

    # -- the FanoutProvider hooks -----------------------------------------------------------

    def _release(self) -> None:
        """QUIT every worker's connection."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return mask_emails_in_text(text)

    def _on_unexpected_error(self) -> None:
        self._drop_connection()

    def _prepare(self, message: Message) -> _Job:
        try:
            mime = build_mime_message(message)
            from_addr = _envelope_address(message.from_email, "from_email")
            to_addr = _envelope_address(message.to_email, "to_email")
            data = mime.as_bytes()
        except (ValueError, TypeError, UnicodeError) as exc:
            raise Unsendable(self._redact(str(exc))) from None
        return _Job(from_addr, to_addr, data, str(mime["Message-ID"]))

    def _try(self, job: _Job, attempts: int) -> Attempt | None:
        try:
            conn, reused = self._connection()
        except _SetupFailure as failure:
            return Attempt("fatal" if failure.fatal else "transient", failure.reason)
        result = self._transact(conn, job.from_addr, job.to_addr, job.data)
        if result.stale:
            if reused and not job.reconnected:
                # The server closed an idle connection; nothing was handed over.
                job.reconnected = True
                logger.debug("smtp: reconnecting after an idle disconnect (%s)", result.reason)
                return None
            return Attempt("transient", result.reason)  # a stale connection that failed again
        return Attempt(result.fate, result.reason, job.message_id)

    # -- one transaction -------------------------------------------------------------------

    def _transact(self, conn: smtplib.SMTP, from_addr: str, to_addr: str, data: bytes) -> _Attempt:
        """One MAIL/RCPT/DATA transaction on an open connection."""
        data_sent = False
        try:
            code, resp = conn.mail(from_addr)
            if code != 250:
                return self._refused(conn, code, resp)
            code, resp = conn.rcpt(to_addr)
            if code not in (250, 251):
                return self._refused(conn, code, resp)
            # From here the server may end up with the message whatever we hear back.
            data_sent = True
            # data() raises SMTPDataError if DATA itself is refused, but *returns* the reply
            # to the content: anything but 250 there means the server did not take it.
            code, resp = conn.data(data)
            if code != 250:
                return self._refused(conn, code, resp)
            return _Attempt("sent", self._redact(_reply_text(code, resp)))
        except smtplib.SMTPDataError as exc:
            return self._refused(conn, exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop_connection()
            reason = self._redact(f"{type(exc).__name__}: {exc or 'no detail'}")
            if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                reason += f" (timeout {self.timeout:g}s)"
            if data_sent:
                return _Attempt("uncertain", reason)
            return _Attempt("transient", reason, stale=True)

    def _refused(self, conn: smtplib.SMTP, code: int, resp: bytes | str) -> _Attempt:
        """The server refused this transaction; leave the connection ready for the next one."""
        reason = self._redact(_reply_text(code, resp))
        if code == 421:
            # The server is closing the connection (often an idle timeout on a reused one):
            # nothing was handed over, so this is the same as a disconnect before DATA.
            self._drop_connection()
            return _Attempt("transient", reason, stale=True)
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop_connection()
        return _Attempt(_classify_reply(code), reason)

    # -- connections -----------------------------------------------------------------------

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """This worker's open connection (reused: True) or a new one; raises _SetupFailure."""
        conn: smtplib.SMTP | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            return conn, True
        conn = self._open()
        self._local.conn = conn
        with self._connections_lock:
            self._connections.add(conn)
        return conn, False

    def _drop_connection(self) -> None:
        conn: smtplib.SMTP | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        with self._connections_lock:
            self._connections.discard(conn)
        conn.close()

    def _open(self) -> smtplib.SMTP:
        """Connect, greet, STARTTLS and AUTH as configured."""
        conn: smtplib.SMTP | None = None
        try:
            if self.ssl:
                conn = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=self._ssl_context,
                )
            else:
                conn = smtplib.SMTP(
                    self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
            conn.ehlo_or_helo_if_needed()
            encrypted = self.ssl
            if not self.ssl and self.starttls is not False:
                if conn.has_extn("starttls"):
                    conn.starttls(context=self._ssl_context)
                    conn.ehlo()
                    encrypted = True
                elif self.starttls is True:
                    raise _SetupFailure(
                        "the SMTP server does not offer STARTTLS, which starttls=True requires",
                        fatal=True,
                    )
            if self.username and self._password:
                if not encrypted and not _is_loopback(self.host):
                    raise _SetupFailure(
                        "the SMTP connection is not encrypted; refusing to send the password",
                        fatal=True,
                    )
                conn.login(self.username, self._password)
            return conn
        except _SetupFailure:
            if conn is not None:
                conn.close()
            raise
        except Exception as exc:
            if conn is not None:
                conn.close()
            raise self._setup_failure(exc) from None

    def _setup_failure(self, exc: Exception) -> _SetupFailure:
        """Classify a connection set-up error; the text never carries the password."""
        where = f"SMTP {self.host}:{self.port}"
        if isinstance(exc, smtplib.SMTPResponseException):
            # Greeting, STARTTLS or AUTH answered with an error code.
            reason = self._redact(f"{where}: {_reply_text(exc.smtp_code, exc.smtp_error)}")
            return _SetupFailure(reason, fatal=exc.smtp_code >= 500)
        if isinstance(exc, ssl_lib.SSLError):  # before OSError: SSLError is one
            return _SetupFailure(self._redact(f"{where}: TLS failed: {exc}"), fatal=True)
        if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
            detail = self._redact(f"{type(exc).__name__}: {exc or 'no detail'}")
            if isinstance(exc, TimeoutError):
                detail += f" (timeout {self.timeout:g}s)"
            return _SetupFailure(f"{where}: {detail}", fatal=False)
        # SMTPNotSupportedError (no AUTH offered), "No suitable authentication method", ...
        return _SetupFailure(self._redact(f"{where}: {type(exc).__name__}: {exc}"), fatal=True)
