"""Amazon SES adapter: one SigV4-signed SES v2 ``SendEmail`` per message, sent with httpx.

Design notes (the why):

* ``SendEmail`` with ``Content.Simple``, not ``SendBulkEmail``: bulk sends only accept a stored
  (or inline) SES template rendered by SES's Handlebars, while nudge renders every email itself
  (sandboxed Jinja2, per-row failures recorded). Bulk would not be faster either: SES's
  throughput limit is its *sending rate* in messages per second (14/s on a new production
  account), whatever the number of requests, and a single request per message gives each
  message its own result and its own ``MessageId``.
* The message's extra headers (``Message.headers``: ``List-Unsubscribe`` and
  ``List-Unsubscribe-Post`` on marketing mail) go in ``Content.Simple.Headers``, after
  ``X-Nudge-Send-Id``, exactly as given: SES v2 takes custom headers on simple content (the
  ``Message.Headers`` list in botocore's ``sesv2`` model: at most 15, names of printable ASCII
  but ``:``, values of 1-995 printable ASCII characters), so no hand-built ``Content.Raw`` MIME
  message is needed and SES still builds the MIME parts. moto's emulator accepts and ignores
  them. A message whose headers SES would refuse (a line break, too many, too long) fails
  alone, before any request.
* botocore only signs (``SigV4Auth`` over an ``AWSRequest``, credentials from botocore's
  standard chain); requests go out through ``wire.WireClient`` (one keep-alive connection
  per worker of a ``ThreadPoolExecutor``), as in the SendGrid adapter (the fan-out, retry
  loop and batch stop are shared with SMTP: ``fanout.py``). Every attempt is signed afresh:
  the signature carries a timestamp and refreshable credentials (SSO, assumed roles) rotate.
* The sending rate is a :class:`RateLimiter` shared by all workers. Throttling answers (429
  ``TooManyRequestsException``, ``LimitExceededException``, ``Throttling``) pause *every* worker
  with exponential backoff; they are not the message's failure, so they do not use up
  ``max_attempts`` (a separate ``max_throttle_retries`` bounds them). 5xx backs off and retries.
* SES has no idempotency key. A request whose answer was lost (read timeout, dropped
  connection) may have been accepted, so it ends ``unknown`` and is never resent.
* Credential errors (bad key, bad signature, expired token) are not any message's fault and
  would fail every message the same way: the first one stops the rest of the batch without
  further requests, and all end ``failed`` *retryable*, so a later tick sends them once the
  credentials are fixed (within each step's grace window).
* The secret key and session token are never formatted into an error, a log line or ``repr``;
  botocore's own DEBUG log of the canonical request has the token line redacted.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formataddr, parseaddr
from typing import Any

import botocore.session
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError

from dagster_project.masking import mask_email, mask_emails_in_text
from dagster_project.providers.base import (
    Message,
    ProviderConfigError,
    SendResult,
    checked_headers,
)
from dagster_project.providers.fanout import Attempt, FanoutProvider, Unsendable
from dagster_project.providers.redaction import REDACTED
from dagster_project.providers.retry import Fate, check_tuning
from dagster_project.providers.wire import (
    WireClient,
    describe_transport_error,
    transport_fate,
)

logger = logging.getLogger(__name__)

SEND_PATH = "/v2/email/outbound-emails"
SIGNING_SERVICE = "ses"  # SES v2's signing name is "ses", not "sesv2"
DEFAULT_REQUESTS_PER_SECOND = 14.0  # a new production SES account's sending rate
_MAX_BODY_IN_ERROR = 300
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# AWS's API reference allows only these in tag names and values (some guides also list '.' and
# '@'); the stricter set is valid under either reading.
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAG_MAX = 256
_MAX_TAGS = 50
# botocore's sesv2 model: MessageHeaderList max 15, MessageHeaderName max 126 and
# MessageHeaderValue max 995 characters.
_MAX_HEADERS = 15
_MAX_HEADER_NAME = 126
_MAX_HEADER_VALUE = 995

_THROTTLING_CODES = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
# Errors about the caller's credentials or clock: the same for every message of the batch.
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
_TRANSIENT_CODES = frozenset(
    {"InternalFailure", "InternalServerError", "ServiceUnavailable", "RequestTimeout"}
)


class _RedactSecurityToken(logging.Filter):
    """botocore logs the canonical request at DEBUG, session token included; blank it out."""

    _TOKEN_LINE = re.compile(r"(?im)^(x-amz-security-token:).*$")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                self._TOKEN_LINE.sub(r"\1" + REDACTED, a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


def _install_botocore_log_filter() -> None:
    auth_logger = logging.getLogger("botocore.auth")
    if not any(isinstance(f, _RedactSecurityToken) for f in auth_logger.filters):
        auth_logger.addFilter(_RedactSecurityToken())


def _tag_text(value: object) -> str:
    return _TAG_UNSAFE.sub("_", str(value))[:_TAG_MAX]


def build_ses_payload(message: Message, *, configuration_set: str | None = None) -> dict[str, Any]:
    """Build the JSON body of SES v2 ``SendEmail`` for one message.

    ``EmailTags`` always carry send_id, trigger and step (then any other ``custom_args``), so
    SES event destinations (bounces, deliveries, opens) join back to the ledger; characters
    SES does not allow in tags become ``_``. The ``X-Nudge-Send-Id`` header rides along too,
    so a bounce that quotes the original headers also names its send, followed by the
    message's extra headers as they are (``Content.Simple.Headers``).

    Raises ``ValueError`` when the message cannot be sent at all (no sender, no body, headers
    SES would refuse).
    """
    from_name, from_addr = parseaddr(message.from_email)
    if not from_addr or "@" not in from_addr:
        raise ValueError("from_email is not an email address")
    _, to_addr = parseaddr(message.to_email)
    if not to_addr or "@" not in to_addr:
        raise ValueError("to_email is not an email address")
    if not message.text and not message.html:
        raise ValueError("message has neither a text nor an HTML body")
    if not message.subject:
        raise ValueError("message has no subject")  # SES rejects an empty subject
    headers = [{"Name": "X-Nudge-Send-Id", "Value": message.send_id}]
    for name, value in checked_headers(message.headers):
        if len(name) > _MAX_HEADER_NAME or len(value) > _MAX_HEADER_VALUE:
            raise ValueError(
                f"header {name[:_MAX_HEADER_NAME]} is longer than SES allows (names "
                f"{_MAX_HEADER_NAME}, values {_MAX_HEADER_VALUE} characters)"
            )
        headers.append({"Name": name, "Value": value})
    if len(headers) > _MAX_HEADERS:
        raise ValueError(
            f"message has {len(headers) - 1} extra headers; SES takes {_MAX_HEADERS - 1} "
            "besides X-Nudge-Send-Id"
        )

    tags = {"send_id": message.send_id, "trigger": message.trigger, "step": message.step}
    for key, value in message.custom_args.items():
        tags.setdefault(str(key), str(value))
    email_tags = []
    for key, value in tags.items():
        name, text = _tag_text(key), _tag_text(value)
        if name and text:
            email_tags.append({"Name": name, "Value": text})
    body: dict[str, Any] = {}
    if message.text:
        body["Text"] = {"Data": message.text, "Charset": "UTF-8"}
    if message.html:
        body["Html"] = {"Data": message.html, "Charset": "UTF-8"}

    payload: dict[str, Any] = {
        # formataddr encodes a non-ASCII display name as an RFC 2047 word, as SES requires.
        "FromEmailAddress": formataddr((from_name, from_addr)) if from_name else from_addr,
        "Destination": {"ToAddresses": [to_addr]},
        "Content": {
            "Simple": {
                "Subject": {"Data": message.subject, "Charset": "UTF-8"},
                "Body": body,
                "Headers": headers,
            }
        },
        "EmailTags": email_tags[:_MAX_TAGS],
    }
    if configuration_set:
        payload["ConfigurationSetName"] = configuration_set
    return payload


def parse_ses_error(response: httpx.Response) -> tuple[str, str]:
    """Return ``(code, message)`` of an SES error answer.

    The code comes from the ``x-amzn-ErrorType`` header (``Code:url``) or the body's
    ``__type``/``code`` (``namespace#Code``), the message from the body's ``message``.
    """
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        data = {}
    code = response.headers.get("x-amzn-ErrorType", "").split(":", 1)[0].strip()
    if not code:
        code = str(data.get("__type") or data.get("code") or data.get("Code") or "")
        code = code.rsplit("#", 1)[-1].strip()
    if not code:
        code = str(data.get("type") or "")  # the local emulator's spelling
    message = str(data.get("message") or data.get("Message") or "").strip()
    if data.get("detail"):
        message = f"{message} ({data['detail']})" if message else str(data["detail"])
    if not message:
        message = response.text.strip() or response.reason_phrase or "no response body"
    if len(message) > _MAX_BODY_IN_ERROR:
        message = message[:_MAX_BODY_IN_ERROR] + "..."
    return code, message


def classify_ses_error(status: int, code: str) -> Fate:
    """What a non-2xx answer means for the message; see the module docstring."""
    if status == 429 or code in _THROTTLING_CODES:
        return "rate_limited"
    if code in _CREDENTIAL_CODES:
        return "fatal"  # no message's fault, and no retry fixes it
    if status >= 500 or status == 408 or code in _TRANSIENT_CODES:
        return "transient"
    # MessageRejected, MailFromDomainNotVerifiedException, AccountSuspendedException,
    # SendingPausedException, NotFoundException, BadRequestException, AccessDenied...
    return "permanent"


@dataclass
class _Job:
    """One message on its way: its signed-per-attempt body and its throttling count."""

    send_id: str
    masked_to: str
    body: bytes
    throttled: int = 0  # throttling answers so far; they are not attempts


def _resolve_credentials(
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    botocore_session: Callable[[], Any],
) -> Any:
    """Explicit keys, else botocore's chain; errors never echo a key."""
    if access_key_id or secret_access_key or session_token:
        if not (access_key_id and secret_access_key):
            raise ProviderConfigError(
                "SES credentials are incomplete: pass both access_key_id and "
                "secret_access_key (and session_token for temporary credentials)."
            )
        credentials: Any = Credentials(access_key_id, secret_access_key, session_token)
    else:
        try:
            credentials = botocore_session().get_credentials()
        except BotoCoreError as exc:  # e.g. a missing profile, an expired SSO token
            raise ProviderConfigError(
                f"AWS credentials for SES could not be loaded: {type(exc).__name__}: {exc}"
            ) from None
        if credentials is None:
            raise ProviderConfigError(
                "No AWS credentials for SES: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(plus AWS_SESSION_TOKEN for temporary ones), or configure a profile, SSO or "
                "an instance/container role."
            )
    try:
        frozen = credentials.get_frozen_credentials()  # refreshes role credentials if due
    except BotoCoreError as exc:
        raise ProviderConfigError(
            f"AWS credentials for SES could not be refreshed: {type(exc).__name__}: {exc}"
        ) from None
    for label, value in (
        ("access key id", frozen.access_key),
        ("secret access key", frozen.secret_key),
        ("session token", frozen.token),
    ):
        if value is None and label == "session token":
            continue
        # Whitespace or control characters would make httpx raise an error that quotes the
        # header value; refuse them here, without echoing them.
        if not value or not (value.isascii() and value.isprintable()) or " " in value:
            raise ProviderConfigError(
                f"AWS {label} is empty or contains whitespace or non-printable characters"
            )
    return credentials


class SesProvider(FanoutProvider[_Job]):
    """Send messages through Amazon SES v2 ``SendEmail``."""

    name = "ses"
    uncertain_who = "SES"
    uncertain_verb = "accepted"
    fatal_label = "credentials rejected"

    def __init__(
        self,
        *,
        region: str | None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        configuration_set: str | None = None,
        timeout: float = 10.0,
        max_concurrency: int = 8,
        max_attempts: int = 5,
        requests_per_second: float | None = DEFAULT_REQUESTS_PER_SECOND,
        max_throttle_retries: int = 8,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the provider; raises :class:`ProviderConfigError` before any send if unusable.

        Without explicit keys, credentials come from botocore's standard chain (environment
        ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, shared config
        files, SSO, container and instance roles). Without ``region``, ``AWS_REGION``, then
        ``AWS_DEFAULT_REGION``/the config file. ``sleep``, ``jitter`` and ``clock`` are
        injectable so tests record waits instead of sleeping.
        """
        check_tuning(timeout, max_concurrency, max_attempts, requests_per_second)
        if max_throttle_retries < 0:
            raise ProviderConfigError("max_throttle_retries must be >= 0")

        session: Any = None

        def botocore_session() -> Any:
            nonlocal session
            if session is None:
                session = botocore.session.get_session()
            return session

        region = (region or os.environ.get("AWS_REGION") or "").strip()
        if not region:
            try:
                region = (botocore_session().get_config_variable("region") or "").strip()
            except BotoCoreError as exc:  # e.g. AWS_PROFILE names a missing profile
                raise ProviderConfigError(
                    f"AWS region for SES could not be read: {type(exc).__name__}: {exc}"
                ) from None
        if not region:
            raise ProviderConfigError(
                "No AWS region for SES: pass region or set AWS_REGION (e.g. us-east-1)."
            )
        if not _REGION.match(region):
            raise ProviderConfigError(f"AWS region {region!r} is not a region name")

        self._credentials = _resolve_credentials(
            access_key_id, secret_access_key, session_token, botocore_session
        )
        if session_token or self._credentials.token:
            _install_botocore_log_filter()

        url = httpx.URL(endpoint_url or f"https://email.{region}.amazonaws.com")
        if url.scheme not in ("http", "https") or not url.host:
            raise ProviderConfigError(
                f"SES endpoint URL must be an http(s) URL such as "
                f"https://email.{region}.amazonaws.com, got {endpoint_url!r}"
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
        self.region = region
        self.endpoint_url = str(url).rstrip("/")
        self.configuration_set = configuration_set or None
        self.max_throttle_retries = max_throttle_retries
        self.requests_per_second = requests_per_second
        self._url = self.endpoint_url + SEND_PATH
        # Content-Type is signed, so it is set per request (see _signed_headers).
        self._client = WireClient(
            {"Accept": "application/json", "User-Agent": "nudge"},
            timeout=self.timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"SesProvider(region={self.region!r}, endpoint_url={self.endpoint_url!r}, "
            f"credentials=<hidden>, configuration_set={self.configuration_set!r}, "
            f"timeout={self.timeout}, max_concurrency={self.max_concurrency}, "
            f"max_attempts={self.max_attempts}, requests_per_second={self.requests_per_second})"
        )

    # -- the FanoutProvider hooks -----------------------------------------------------------

    def _release(self) -> None:
        self._client.close()

    def _redact(self, text: str) -> str:
        frozen = self._credentials.get_frozen_credentials()
        for secret in (frozen.secret_key, frozen.token):
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def _prepare(self, message: Message) -> _Job:
        try:
            payload = build_ses_payload(message, configuration_set=self.configuration_set)
        except ValueError as exc:
            raise Unsendable(str(exc)) from None
        body = json.dumps(payload).encode("utf-8")  # serialised once, signed per attempt
        return _Job(message.send_id, mask_email(message.to_email), body)

    def _try(self, job: _Job, attempts: int) -> Attempt | SendResult | None:
        result = self._attempt(job.body)
        reason = mask_emails_in_text(result.reason)
        if result.fate == "rate_limited":
            # Not an attempt: SES refused for rate, not for anything about this message.
            job.throttled += 1
            if job.throttled > self.max_throttle_retries:
                logger.warning(
                    "ses: send %s to %s still throttled after %d retries: %s",
                    job.send_id,
                    job.masked_to,
                    self.max_throttle_retries,
                    reason,
                )
                return SendResult(
                    send_id=job.send_id,
                    status="failed",
                    error=reason,
                    attempts=max(attempts, 1),
                    retryable=True,
                )
            delay = self._backoff(job.throttled)
            logger.info("ses: throttled (%s); all workers pause %.2fs", reason, delay)
            self._limiter.pause_for(delay)
            return None
        return Attempt(result.fate, reason, result.message_id)

    # -- one request -----------------------------------------------------------------------

    def _signed_headers(self, body: bytes) -> dict[str, str]:
        # Frozen per request: a refreshable credential cannot change between its three parts.
        credentials = self._credentials.get_frozen_credentials()
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={"Content-Type": "application/json"},
        )
        SigV4Auth(credentials, SIGNING_SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())

    def _attempt(self, body: bytes) -> Attempt:
        """One signed POST; classify the outcome."""
        try:
            headers = self._signed_headers(body)
        except Exception as exc:  # e.g. refreshing role credentials failed: nothing was sent
            return Attempt("transient", self._redact(f"signing failed: {type(exc).__name__}"))
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Attempt(transport_fate(exc), self._transport_reason(exc))

        status = response.status_code
        if 200 <= status < 300:
            try:
                message_id = response.json().get("MessageId")
            except (ValueError, UnicodeDecodeError, AttributeError):
                message_id = None
            return Attempt("sent", message_id=str(message_id) if message_id else None)
        code, text = parse_ses_error(response)
        reason = self._redact(f"HTTP {status} {code or 'error'}: {text}")
        return Attempt(classify_ses_error(status, code), reason)

    def _transport_reason(self, exc: httpx.HTTPError) -> str:
        return self._redact(describe_transport_error(exc, self.timeout))
