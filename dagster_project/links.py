"""The links nudge puts in an email: one-click unsubscribe and double opt-in confirmation.

A link carries a token that ``nudge serve`` verifies without reading the warehouse (the service
is stateless): the token is the claim itself, ``(kind, customer, list, send_id, issued)``, and an
HMAC-SHA256 of it under ``NUDGE_LINK_SECRET``. Nobody without the secret can make a token for
another customer, and a token that was changed in any byte fails. Unsubscribe tokens never
expire (a link in a year-old email must still work, and RFC 8058 wants it honoured); confirm
tokens carry their issue time and expire (``NUDGE_CONFIRM_LINK_DAYS``). During a key rotation
``NUDGE_LINK_SECRET_PREVIOUS`` is still accepted, so links already in inboxes keep working.

Tokens are deterministic (the same send renders the same link): a request resent under its
idempotency key after a crash must carry the same body.

The claim is readable (base64url JSON): it holds nudge's ids (customer id, list, send_id), never
an address or a name. Signing, not encryption, is what the service needs: it must trust the
claim, not hide it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .config import STATE_DIR, ConfigError

MIN_SECRET_CHARS = 32
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"
DEFAULT_CONFIRM_DAYS = 7
_BLOCK = hashlib.sha256().block_size  # HMAC pads its key to the hash's block
# Where the demo keeps the secret it generated when NUDGE_LINK_SECRET is unset.
GENERATED_SECRET_FILE = STATE_DIR / "link_secret"
# The ESPs where a generated secret and a loopback URL are fine: nothing leaves the machine.
LOCAL_ESPS = frozenset({"outbox", "dryrun"})

Kind = Literal["unsubscribe", "confirm"]
_KIND_CODES: dict[str, Kind] = {"u": "unsubscribe", "c": "confirm"}
_CODES = {kind: code for code, kind in _KIND_CODES.items()}


class InvalidToken(ValueError):
    """A token that is malformed, tampered, signed with a key nudge does not hold, or expired."""


@dataclass(frozen=True)
class Claim:
    """What a valid token says."""

    kind: Kind
    customer_id: str
    list: str
    send_id: str | None
    issued_at: datetime | None = None


@dataclass(frozen=True)
class LinkSettings:
    """Where the links point and the keys that sign them (``NUDGE_PUBLIC_URL`` and friends)."""

    public_url: str
    secret: str
    previous_secret: str | None = None
    unsubscribe_mailto: str | None = None
    confirm_days: int = DEFAULT_CONFIRM_DAYS
    # True when the secret was generated for this machine (no NUDGE_LINK_SECRET): fine for the
    # demo's outbox, refused for a real provider (see ``require_for``).
    generated: bool = False

    def __repr__(self) -> str:  # never print the keys
        return f"LinkSettings(public_url={self.public_url!r}, generated={self.generated})"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, secret_file: Path | None = None
    ) -> LinkSettings:
        """The link settings of this environment: ``NUDGE_PUBLIC_URL``, ``NUDGE_LINK_SECRET``,
        ``NUDGE_LINK_SECRET_PREVIOUS``, ``NUDGE_UNSUBSCRIBE_MAILTO``,
        ``NUDGE_CONFIRM_LINK_DAYS``."""
        env = os.environ if environ is None else environ
        return cls.build(
            public_url=env.get("NUDGE_PUBLIC_URL"),
            secret=env.get("NUDGE_LINK_SECRET"),
            previous_secret=env.get("NUDGE_LINK_SECRET_PREVIOUS"),
            unsubscribe_mailto=env.get("NUDGE_UNSUBSCRIBE_MAILTO"),
            confirm_days=env.get("NUDGE_CONFIRM_LINK_DAYS"),
            secret_file=secret_file,
        )

    @classmethod
    def build(
        cls,
        *,
        public_url: str | None = None,
        secret: str | None = None,
        previous_secret: str | None = None,
        unsubscribe_mailto: str | None = None,
        confirm_days: str | int | None = None,
        secret_file: Path | None = None,
    ) -> LinkSettings:
        """Validated settings. Without a secret one is generated once and kept in
        ``.nudge/link_secret`` (mode 0600), so the demo and ``nudge serve`` agree with no
        configuration; ``require_for`` refuses it for a real provider."""
        url = (public_url or DEFAULT_PUBLIC_URL).strip().rstrip("/")
        _check_public_url(url)
        generated = not secret
        if not secret:
            secret = _generated_secret(secret_file or GENERATED_SECRET_FILE)
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"NUDGE_LINK_SECRET must be at least {MIN_SECRET_CHARS} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        previous = previous_secret or None
        if previous is not None and len(previous) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"NUDGE_LINK_SECRET_PREVIOUS must be at least {MIN_SECRET_CHARS} characters"
            )
        mailto = (unsubscribe_mailto or "").strip() or None
        if mailto and ("@" not in mailto or any(c in mailto for c in "<>?\r\n ,")):
            raise ConfigError(f"NUDGE_UNSUBSCRIBE_MAILTO must be one address, got {mailto!r}")
        days = str(confirm_days or DEFAULT_CONFIRM_DAYS).strip()
        if not days.isdigit() or int(days) < 1:
            raise ConfigError(
                f"NUDGE_CONFIRM_LINK_DAYS must be a whole number of days, got {days!r}"
            )
        return cls(
            public_url=url,
            secret=secret,
            previous_secret=previous,
            unsubscribe_mailto=mailto,
            confirm_days=int(days),
            generated=generated,
        )

    def require_shared(self) -> None:
        """``nudge serve`` behind a public URL must verify with the ticks' key: a secret it
        generated for itself would refuse every real link (and lose every unsubscribe)."""
        if self.generated and not _is_loopback(urlsplit(self.public_url).hostname or ""):
            raise ConfigError(
                f"NUDGE_PUBLIC_URL={self.public_url} but NUDGE_LINK_SECRET is unset: set it to "
                "the key the ticks sign links with"
            )

    def require_for(self, esp: str) -> None:
        """Refuse to mail through a real provider with links nobody outside can use.

        A marketing email whose unsubscribe link points at a loopback address, or is signed by
        a secret only this machine knows, breaks the law and the inbox providers' rules (and a
        double opt-in email with such a link confirms nobody); the tick fails loudly instead,
        before anything is planned.
        """
        if esp in LOCAL_ESPS:
            return
        if self.generated:
            raise ConfigError(
                f"NUDGE_ESP={esp} sends real email, whose unsubscribe and confirm links need "
                "NUDGE_LINK_SECRET (the key `nudge serve` verifies them with); it is unset"
            )
        if _is_loopback(urlsplit(self.public_url).hostname or ""):
            raise ConfigError(
                f"NUDGE_ESP={esp} sends real email, whose unsubscribe and confirm links would "
                f"point at {self.public_url}: set NUDGE_PUBLIC_URL to the https address of "
                "`nudge serve`"
            )

    # -- tokens --------------------------------------------------------------------------------

    def token(
        self,
        kind: Kind,
        customer_id: str,
        list_name: str,
        send_id: str | None = None,
        issued_at: datetime | None = None,
    ) -> str:
        claim: list[object] = [_CODES[kind], customer_id, list_name, send_id or ""]
        if issued_at is not None:
            claim.append(int(issued_at.timestamp()))
        body = _b64(json.dumps(claim, separators=(",", ":"), ensure_ascii=False).encode())
        return f"{body}.{_b64(_mac(self.secret, body))}"

    def verify(self, token: str, *, now: datetime | None = None) -> Claim:
        """The claim of a valid token; :class:`InvalidToken` otherwise (constant-time check)."""
        body, dot, mac = token.partition(".")
        if not dot or not body or not mac or len(token) > 1024:
            raise InvalidToken("malformed")
        try:
            given = _unb64(mac)
        except ValueError:
            raise InvalidToken("malformed") from None
        keys = [self.secret, *([self.previous_secret] if self.previous_secret else [])]
        # Compare against every key, always: the time taken says nothing about which matched.
        matches = [hmac.compare_digest(given, _mac(key, body)) for key in keys]
        if not any(matches):
            raise InvalidToken("bad signature")
        try:
            claim = json.loads(_unb64(body))
            code, customer_id, list_name, send_id = claim[:4]
            kind = _KIND_CODES[code]
            issued = datetime.fromtimestamp(claim[4], UTC) if len(claim) > 4 else None
        except (ValueError, KeyError, TypeError, IndexError, OverflowError):
            raise InvalidToken("malformed") from None
        if not isinstance(customer_id, str) or not isinstance(list_name, str) or not customer_id:
            raise InvalidToken("malformed")
        if kind == "confirm":
            if issued is None:
                raise InvalidToken("malformed")
            now = now or datetime.now(UTC)
            if now - issued > timedelta(days=self.confirm_days):
                raise InvalidToken("expired")
        return Claim(kind, customer_id, list_name, send_id or None, issued)

    # -- what goes into an email ---------------------------------------------------------------

    def unsubscribe_url(self, customer_id: str, list_name: str, send_id: str) -> str:
        return f"{self.public_url}/u/{self.token('unsubscribe', customer_id, list_name, send_id)}"

    def confirm_url(self, customer_id: str, list_name: str, issued_at: datetime) -> str:
        token = self.token("confirm", customer_id, list_name, issued_at=issued_at)
        return f"{self.public_url}/confirm/{token}"

    def unsubscribe_headers(self, url: str) -> dict[str, str]:
        """RFC 2369 ``List-Unsubscribe`` (https first, then the optional mailto) and RFC 8058's
        ``List-Unsubscribe-Post``, which tells mailbox providers the https link takes a POST."""
        targets = [f"<{url}>"]
        if self.unsubscribe_mailto:
            targets.append(f"<mailto:{self.unsubscribe_mailto}?subject=unsubscribe>")
        return {
            "List-Unsubscribe": ", ".join(targets),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }


def _mac(secret: str, body: str) -> bytes:
    """16 bytes of HMAC-SHA256 (RFC 2104): 128 bits is far beyond guessing, and keeps links
    short."""
    inner, outer = _keyed(secret)
    digest = inner.copy()
    digest.update(body.encode())
    final = outer.copy()
    final.update(digest.digest())
    return final.digest()[:16]


@functools.lru_cache(maxsize=8)
def _keyed(secret: str) -> tuple[Any, Any]:
    """SHA-256 states with the key's inner and outer pads already hashed in.

    A push signs one or two links per email, and ``hmac.digest`` costs several times two
    copies and two short updates of these states: it sets OpenSSL's HMAC up again on every
    call, and releases the GIL each time, so while the send thread runs a render thread waits
    to get it back (a tenth of a batch push's rendering, profiled). Same bytes as
    ``hmac.digest(key, body, "sha256")``, which the tests check.
    """
    key = secret.encode()
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
    return inner, outer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text.replace("-", "").replace("_", "").isalnum():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_public_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"NUDGE_PUBLIC_URL must be an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"NUDGE_PUBLIC_URL={url}: links in email must use https (plain http is accepted "
            "only for a loopback host, for the demo and tests)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"NUDGE_PUBLIC_URL must not have a query or fragment, got {url!r}")


def _generated_secret(path: Path) -> str:
    """This machine's link secret, created on first use (0600, never overwritten)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Written whole to a temporary file of its own, then linked into place: whoever links
    # first wins, and everyone reads the winner's complete file, never a half-written one.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(secret + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # Another process or thread may have won: then everyone uses its secret.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    secret = path.read_text().strip()
    return secret
