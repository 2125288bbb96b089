"""Shared machinery for the JSON-over-HTTP providers (SendGrid, Postmark, Resend, webhook).

An adapter says *what* goes over the wire: one JSON item per message (:meth:`build_item`), the
body of one request (:meth:`encode`), what a 2xx answer says about each message
(:meth:`parse_accepted`) and the provider's words for an error. :class:`HttpJsonProvider` decides
*how*: requests of at most ``batch_size`` messages and ``max_request_bytes`` bytes, run by a
``ThreadPoolExecutor`` whose workers each keep one connection alive (``wire.WireClient``: for
this request/response pattern sync transports on threads measured faster than ``AsyncClient``),
paced by a shared :class:`RateLimiter`, each request with its own retry loop (the fates are
those of ``retry.py``; reading the answer is ``wire.py``):

========================== ============================================== ==============
answer                     what happens                                   an attempt?
========================== ============================================== ==============
2xx                        per-message results, as the adapter reads them yes
429 (or quota headers)     every worker pauses for ``Retry-After`` /       no
                           ``RateLimit-Reset``; past ``max_rate_limit_wait``
                           in total the request's messages fail retryable
5xx, 408, connect error    backoff with jitter, then failed retryable     yes
read timeout, dropped      idempotent provider: resent with the *same*    yes
connection                 key; otherwise ``unknown`` and never resent
400 / 422                  all-or-nothing batch: split in halves until    yes
                           the bad rows stand alone; one message: failed
413                        split; one message: failed permanent           yes
other 4xx                  failed permanent                               yes
========================== ============================================== ==============

Why waits for a 429 are not attempts: the provider did not look at the messages, it asked us to
come back later, so "failed after 5 attempts" would be a lie about the messages. Waiting is
bounded instead, by time (``max_rate_limit_wait``) and by count, so a provider that keeps saying
"later" cannot hang the run.

Why ``unknown`` is sticky: once a request may have been delivered (its answer was lost), a
later failure of the same messages is reported as ``unknown``, not ``failed``: a retryable
failure would be resent by the next tick and could deliver twice. The one exception is a
400/422/413 to a same-key retry: the provider judged that very payload under that key (it
would have replayed its first answer had it accepted it), so its "no" is authoritative.

Every attempt is journaled just before it goes out, and every request's answer as soon as it
is read (:class:`~dagster_project.providers.base.Journal`): a worker runs one request at a time,
so a crash leaves at most one request per worker in doubt.

Secrets (API keys, tokens, HMAC secrets) live in the client's default headers or the adapter
only; every text that can reach an error, a log line or ``repr`` goes through :meth:`_redact`
(see ``redaction.py``), and recipients are masked in logs (:func:`mask_email`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from dagster_project.masking import mask_email, mask_emails_in_text
from dagster_project.providers.base import (
    HandoverError,
    Journal,
    Message,
    ProviderConfigError,
    ProviderLimits,
    SendResult,
    SendStatus,
)
from dagster_project.providers.pool import PooledProvider
from dagster_project.providers.ratelimit import RateLimiter
from dagster_project.providers.redaction import HTTPX_LOG_REDACTOR, REDACTED, public_url
from dagster_project.providers.retry import Fate, SleepClock, backoff_delay, check_tuning
from dagster_project.providers.wire import (
    WireClient,
    body_excerpt,
    describe_transport_error,
    json_or_none,
    parse_retry_after,
    rate_limit_wait,
    transport_fate,
    window_spent,
)

logger = logging.getLogger(__name__)

# A provider answering 429 with "retry in 0 s" forever must not spin a worker forever.
MAX_RATE_LIMITED_ANSWERS = 20

Results = list[tuple[int, SendResult]]  # (index in the caller's list, result)


@dataclass(frozen=True)
class Rejection:
    """An adapter's reading of one non-2xx answer (or of a transport error)."""

    fate: Fate
    reason: str
    # Seconds the provider asked us to wait (Retry-After or its rate-limit headers), if any.
    wait: float | None = None
    # For "rate_limited": waiting will not help within this run (a daily quota), fail now.
    exhausted: bool = False


@dataclass(frozen=True)
class Delivery:
    """What a 2xx answer says about one message of the request."""

    status: SendStatus
    message_id: str | None = None
    error: str | None = None
    retryable: bool = False


@dataclass(frozen=True)
class RequestEntry:
    """One message on its way: its position in the caller's list and its JSON item."""

    index: int
    message: Message
    item: Any


@dataclass
class _Request:
    entries: list[RequestEntry]
    body: bytes
    key: str | None
    prior_attempts: int = 0  # requests that carried these messages before a split
    handed_over: bool = False  # journaled as going out at least once

    @property
    def label(self) -> str:
        first = self.entries[0].message.send_id
        if len(self.entries) == 1:
            return f"send {first}"
        return f"request of {len(self.entries)} messages ({first}, ...)"

    @property
    def send_ids(self) -> list[str]:
        return [e.message.send_id for e in self.entries]


@dataclass
class _Split:
    """A rejected all-or-nothing request, to be sent again as these halves."""

    children: list[_Request]


@dataclass
class _Tries:
    """Where one request's retry loop stands."""

    attempts: int = 0
    rate_waited: float = 0.0
    rate_limited_answers: int = 0
    maybe_delivered: bool = False
    reason: str = ""


class HttpJsonProvider(PooledProvider):
    """Base class of the HTTP adapters; subclasses fill in the hooks at the bottom."""

    name: str = "http"
    display_name: ClassVar[str] = "the provider"  # for error texts: "Postmark may have..."
    secret_label: ClassVar[str] = "api_key"  # for repr: "api_key=<hidden>"
    # Providers document a maximum length for idempotency keys (Resend: 256).
    max_idempotency_key_length: ClassVar[int] = 256
    limits: ProviderLimits

    def __init__(
        self,
        url: str,
        *,
        limits: ProviderLimits,
        batch_size: int,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        url_secrets: Sequence[str] = (),
        timeout: float,
        max_concurrency: int,
        max_attempts: int,
        requests_per_second: float | None = None,
        max_rate_limit_wait: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``url``: the endpoint every request is POSTed to. ``headers``: sent on every request
        (authentication included). ``secrets``: strings scrubbed from every error and log line.
        ``url_secrets``: credentials inside ``url`` itself, also scrubbed from httpx's logs.

        ``sleep``, ``jitter`` and ``clock`` are injectable so tests record waits instead of
        sleeping; when ``sleep`` is injected without a ``clock``, the clock advances by the
        injected sleeps (see :class:`~dagster_project.providers.retry.SleepClock`).
        ``transport`` accepts an ``httpx.MockTransport``.
        """
        check_tuning(
            timeout, max_concurrency, max_attempts, requests_per_second, max_rate_limit_wait
        )
        if batch_size < 1:
            raise ProviderConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.limits = limits
        self.batch_size = batch_size
        self.timeout = float(timeout)
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.max_rate_limit_wait = float(max_rate_limit_wait)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._url = url
        self._secrets = tuple(s for s in secrets if s)
        self._jitter = jitter
        if clock is None and sleep is not time.sleep:
            sleep_clock = SleepClock(sleep)
            self._clock: Callable[[], float] = sleep_clock
            self._sleep: Callable[[float], None] = sleep_clock.sleep
        else:
            self._clock = clock or time.monotonic
            self._sleep = sleep
        rate = (
            requests_per_second if requests_per_second is not None else limits.requests_per_second
        )
        self.requests_per_second = rate
        self._limiter = RateLimiter(rate, clock=self._clock, sleep=self._sleep)
        self._blocked_until = 0.0  # a clock() value; see _block_for()
        self._state_lock = threading.Lock()
        self.requests_made = 0
        self._client = WireClient(
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "nudge",
                **headers,
            },
            timeout=self.timeout,
            transport=transport,
        )
        self._url_secrets = tuple(s for s in url_secrets if s)
        HTTPX_LOG_REDACTOR.register(self._url_secrets)
        self._start_pool(max_concurrency)

    def _repr_url(self) -> str:
        return public_url(self._url)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={self._repr_url()!r}, {self.secret_label}=<hidden>, "
            f"timeout={self.timeout}, max_concurrency={self.max_concurrency}, "
            f"max_attempts={self.max_attempts}, requests_per_second={self.requests_per_second})"
        )

    # -- the Provider interface ------------------------------------------------------------

    def send(
        self,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        journal: Journal | None = None,
    ) -> list[SendResult]:
        """Send every message; one result per message, in input order. Never raises for one.

        With an idempotent provider every request carries a key derived from
        ``idempotency_key`` (see :meth:`_plan`); without one, a random key still makes this
        call's own retries safe, though not a rerun after a crash.
        """
        self._check_open()
        if not messages:
            return []
        results: list[SendResult | None] = [None] * len(messages)
        entries: list[RequestEntry] = []
        for index, message in enumerate(messages):
            try:
                entries.append(RequestEntry(index, message, self.build_item(message)))
            except ValueError as exc:
                reason = self._redact(str(exc))
                logger.warning(
                    "%s: send %s to %s not sent: %s",
                    self.name,
                    message.send_id,
                    mask_email(message.to_email),
                    reason,
                )
                results[index] = self._result(message, "failed", error=reason, attempts=0)

        key = idempotency_key
        if key is None and self.limits.idempotent:
            key = uuid.uuid4().hex
        requests = self._plan(entries, key, results)
        futures = [self._executor.submit(self._run, request, journal) for request in requests]
        for future in futures:
            for index, result in future.result():
                results[index] = result

        final = [r for r in results if r is not None]
        assert len(final) == len(messages), "every message gets exactly one result"
        counts = {s: sum(r.status == s for r in final) for s in ("sent", "failed", "unknown")}
        logger.info(
            "%s: %d sent, %d failed, %d unknown (%d messages, %d requests)",
            self.name,
            counts["sent"],
            counts["failed"],
            counts["unknown"],
            len(final),
            len(requests),
        )
        return final

    def _release(self) -> None:
        self._client.close()
        HTTPX_LOG_REDACTOR.unregister(self._url_secrets)

    # -- planning: which messages go in which request ----------------------------------------

    def _plan(
        self, entries: list[RequestEntry], key: str | None, results: list[SendResult | None]
    ) -> list[_Request]:
        """Cut the messages into requests, deterministically, each with its own key.

        Entries are ordered by send_id first, so the same batch is cut the same way on every
        run whatever order the caller listed it in: a rerun after a crash then sends the same
        requests with the same keys, and the provider recognises them instead of delivering
        twice. A request's key is the batch key when there is one request, else
        ``f"{key}-{i}"``; a request split later (too large, or rejected) gives its halves
        ``f"{its key}-0"`` and ``-1``, by the same reasoning.
        """
        ordered = sorted(entries, key=lambda e: (e.message.send_id, e.index))
        chunks = self.chunks(ordered)
        requests: list[_Request] = []
        for i, chunk in enumerate(chunks):
            chunk_key = self._fit_key(key) if len(chunks) == 1 else self._child_key(key, i)
            requests.extend(self._fit(chunk, chunk_key, results))
        return requests

    def _fit(
        self, entries: list[RequestEntry], key: str | None, results: list[SendResult | None]
    ) -> list[_Request]:
        """One request, or halves of it until each fits ``max_request_bytes``."""
        body = self.encode([e.item for e in entries])
        limit = self.limits.max_request_bytes
        if limit is None or len(body) <= limit:
            return [_Request(entries, body, key)]
        if len(entries) == 1:
            (entry,) = entries
            reason = (
                f"message is {len(body)} bytes as a request, over {self.display_name}'s "
                f"limit of {limit} bytes"
            )
            logger.warning("%s: send %s not sent: %s", self.name, entry.message.send_id, reason)
            results[entry.index] = self._result(entry.message, "failed", error=reason, attempts=0)
            return []
        middle = len(entries) // 2
        return [
            *self._fit(entries[:middle], self._child_key(key, 0), results),
            *self._fit(entries[middle:], self._child_key(key, 1), results),
        ]

    def _child_key(self, key: str | None, index: int) -> str | None:
        return None if key is None else self._fit_key(f"{key}-{index}")

    def _fit_key(self, key: str | None) -> str | None:
        """The key itself, or its SHA-256 when too long: still deterministic and distinct."""
        if key is not None and len(key) > self.max_idempotency_key_length:
            return hashlib.sha256(key.encode()).hexdigest()
        return key

    # -- running one request ---------------------------------------------------------------

    def _run(self, request: _Request, journal: Journal | None) -> Results:
        """One request, and the halves it may be split into, one after another in this worker.

        Never raises: whatever happens becomes a result for each of the request's messages.
        An exception escaping here would surface from ``send()`` and lose the results of
        messages that were already accepted, and the caller would send them again. Each
        request's answer goes to the journal as soon as it is known, before the next request
        of this worker is handed over.
        """
        out: Results = []
        pending = [request]
        while pending:
            current = pending.pop(0)
            try:
                outcome = self._deliver(current, journal)
            except Exception as exc:
                reason = self._redact(f"unexpected error: {type(exc).__name__}: {exc}")
                logger.error("%s: %s: %s", self.name, current.label, reason)
                # Whether a request went out before the error is not known here: 'unknown' is
                # the answer that cannot lead to a second delivery.
                outcome = self._settle(current, "unknown", reason, attempts=0)
            if isinstance(outcome, _Split):
                if journal is not None and current.handed_over:
                    self._journal(journal.returned, current.send_ids)
                pending[0:0] = outcome.children
                continue
            if journal is not None and current.handed_over:
                self._journal(journal.answered, [result for _, result in outcome])
            out.extend(outcome)
        return out

    def _journal(self, record: Callable[[Any], None], entries: Any) -> None:
        """Journal an answer; a journal that failed must not lose the results themselves (the
        batch's settle still records them, from what ``send()`` returns)."""
        try:
            record(entries)
        except HandoverError as exc:
            logger.error("%s: could not journal an answer: %s", self.name, exc)

    def _deliver(self, request: _Request, journal: Journal | None) -> Results | _Split:
        """The retry loop of one request: rate limits, backoff, splits; see the module doc."""
        tries = _Tries()
        while True:
            given_up = self._wait_for_rate_limit(request, tries)
            if given_up is not None:
                return given_up
            answer = self._attempt(request, journal, tries)
            if not isinstance(answer, Rejection):
                return answer
            tries.reason = self._redact(answer.reason)
            if answer.fate == "fatal":
                # The hand-over could not be journaled: the request did not go out, no attempt.
                return self._give_up(request, tries.reason, tries.attempts, tries.maybe_delivered)
            if answer.fate == "rate_limited":
                given_up = self._on_rate_limited(request, answer, tries)
                if given_up is not None:
                    return given_up
                continue
            tries.attempts += 1
            outcome = self._on_failure(request, answer, tries)
            if outcome is not None:
                return outcome

    def _wait_for_rate_limit(self, request: _Request, tries: _Tries) -> Results | None:
        """Wait while the provider asked every worker to; give up past the budget."""
        blocked = self._rate_limited_for()
        if blocked > 0 and tries.rate_waited + blocked > self.max_rate_limit_wait:
            why = (
                f"{self.display_name} is rate limiting this account for another "
                f"{blocked:.1f}s, more than max_rate_limit_wait="
                f"{self.max_rate_limit_wait:g}s allows (waited {tries.rate_waited:.1f}s)"
            )
            reason = f"{tries.reason}; {why}" if tries.reason else f"not sent: {why}"
            return self._give_up(request, reason, tries.attempts, tries.maybe_delivered)
        if blocked > 0:
            tries.rate_waited += blocked
            self._limiter.pause_for(blocked)
        self._limiter.acquire()
        return None

    def _attempt(
        self, request: _Request, journal: Journal | None, tries: _Tries
    ) -> Results | Rejection:
        """Journal the hand-over, POST once, and read the answer."""
        if journal is not None:
            try:
                journal.handing_over(request.send_ids, request.key)
            except HandoverError as exc:
                # The request does not go out: nothing the ledger could not account for.
                return Rejection("fatal", self._redact(f"not sent: {exc}"))
            request.handed_over = True
        with self._state_lock:
            self.requests_made += 1
        try:
            response = self._client.post(
                self._url,
                content=request.body,
                headers=self.request_headers(request.body, request.key),
            )
        except httpx.HTTPError as exc:
            return Rejection(transport_fate(exc), self._transport_reason(exc))
        self._note_window(response)
        if 200 <= response.status_code < 300:
            return self._accepted(request, response, tries.attempts + 1)
        return self.classify(response)

    def _on_rate_limited(
        self, request: _Request, rejection: Rejection, tries: _Tries
    ) -> Results | None:
        """Pause every worker as the provider asked; give up after too many such answers."""
        tries.rate_limited_answers += 1
        if tries.rate_limited_answers > MAX_RATE_LIMITED_ANSWERS:
            reason = (
                f"{tries.reason}; still rate limited after {tries.rate_limited_answers} answers"
            )
            return self._give_up(request, reason, tries.attempts, tries.maybe_delivered)
        wait = rejection.wait
        if wait is None:
            wait = self._backoff(tries.rate_limited_answers)
        if rejection.exhausted:
            # Nothing to wait for in this run: make every request fail fast.
            wait = max(wait, self.max_rate_limit_wait + 1.0)
        self._block_for(wait)
        logger.warning(
            "%s: %s rate limited (%s); %s %.2fs",
            self.name,
            request.label,
            mask_emails_in_text(tries.reason),
            "all workers wait" if wait <= self.max_rate_limit_wait else "told to wait",
            wait,
        )
        return None

    def _on_failure(
        self, request: _Request, rejection: Rejection, tries: _Tries
    ) -> Results | _Split | None:
        """What a failed attempt leads to: ``None`` to try again (after a backoff), else the
        request's outcome."""
        reason = tries.reason
        fate = rejection.fate
        if fate == "uncertain":
            tries.maybe_delivered = True
            if not (self.limits.idempotent and request.key is not None):
                return self._give_up(
                    request,
                    f"{reason}; {self.display_name} may have accepted it, not retried",
                    tries.attempts,
                    maybe_delivered=True,
                )
            fate = "transient"  # resent with the same key: the provider deduplicates
        if fate == "transient":
            if tries.attempts >= self.max_attempts:
                return self._give_up(request, reason, tries.attempts, tries.maybe_delivered)
            if rejection.wait is not None:
                delay = min(rejection.wait, self.backoff_max)
            else:
                delay = self._backoff(tries.attempts)
            logger.warning(
                "%s: %s attempt %d/%d failed (%s); retrying in %.2fs",
                self.name,
                request.label,
                tries.attempts,
                self.max_attempts,
                mask_emails_in_text(reason),
                delay,
            )
            self._sleep(delay)
            return None
        if fate in ("invalid", "too_large"):
            # The provider judged this very payload, under the same key if an earlier attempt
            # was lost (it would have replayed that answer had it been accepted): an
            # authoritative "no", whatever happened before.
            tries.maybe_delivered = False
            splittable = len(request.entries) > 1 and (
                fate == "too_large" or not self.limits.per_message_results
            )
            if splittable:
                return self._split(request, reason, tries.attempts)
        if fate == "conflict" or tries.maybe_delivered:
            return self._give_up(request, reason, tries.attempts, maybe_delivered=True)
        logger.warning(
            "%s: %s rejected, not retrying: %s",
            self.name,
            request.label,
            mask_emails_in_text(reason),
        )
        return self._settle(request, "failed", reason, tries.attempts)

    def _split(self, request: _Request, reason: str, attempts: int) -> _Split:
        """The two halves of a rejected all-or-nothing request, to isolate bad rows.

        Worst case (every row bad) costs 2n-1 requests for n rows; a batch with one bad row
        costs about 2*log2(n). The halves run in this worker, one after the other (see
        :meth:`_run`): submitting them to the pool and waiting could deadlock a full pool.
        """
        middle = len(request.entries) // 2
        logger.info(
            "%s: %s rejected (%s); splitting it to isolate the rejected rows",
            self.name,
            request.label,
            mask_emails_in_text(reason),
        )
        return _Split(
            [
                _Request(
                    half,
                    self.encode([e.item for e in half]),
                    self._child_key(request.key, i),
                    request.prior_attempts + attempts,
                )
                for i, half in enumerate((request.entries[:middle], request.entries[middle:]))
            ]
        )

    def _give_up(
        self, request: _Request, reason: str, attempts: int, maybe_delivered: bool
    ) -> Results:
        """Nothing more to try: 'unknown' if a request may have got through, else retryable."""
        if maybe_delivered:
            logger.warning(
                "%s: %s may have been accepted (%s); not resent",
                self.name,
                request.label,
                mask_emails_in_text(reason),
            )
            return self._settle(request, "unknown", reason, attempts)
        logger.warning(
            "%s: %s failed after %d attempts: %s",
            self.name,
            request.label,
            attempts,
            mask_emails_in_text(reason),
        )
        return self._settle(request, "failed", reason, attempts, retryable=True)

    def _accepted(self, request: _Request, response: httpx.Response, attempts: int) -> Results:
        deliveries = self.parse_accepted(response, request.entries)
        if len(deliveries) != len(request.entries):
            reason = (
                f"{self.display_name} answered HTTP {response.status_code} with "
                f"{len(deliveries)} results for {len(request.entries)} messages"
            )
            return self._give_up(request, reason, attempts, maybe_delivered=True)
        out = []
        total = request.prior_attempts + attempts
        # Checked once: masking each address for a debug line nobody reads cost more than
        # reading the answer.
        debug = logger.isEnabledFor(logging.DEBUG)
        for entry, delivery in zip(request.entries, deliveries, strict=True):
            error = self._redact(delivery.error) if delivery.error else None
            if delivery.status == "sent":
                if debug:
                    logger.debug(
                        "%s: send %s to %s accepted (attempt %d)",
                        self.name,
                        entry.message.send_id,
                        mask_email(entry.message.to_email),
                        total,
                    )
            else:
                logger.warning(
                    "%s: send %s to %s %s: %s",
                    self.name,
                    entry.message.send_id,
                    mask_email(entry.message.to_email),
                    "failed" if delivery.status == "failed" else "is unknown",
                    mask_emails_in_text(error or ""),
                )
            out.append(
                (
                    entry.index,
                    self._result(
                        entry.message,
                        delivery.status,
                        message_id=delivery.message_id,
                        error=error,
                        attempts=total,
                        retryable=delivery.retryable and delivery.status == "failed",
                    ),
                )
            )
        return out

    def _settle(
        self,
        request: _Request,
        status: SendStatus,
        reason: str,
        attempts: int,
        *,
        retryable: bool = False,
    ) -> Results:
        total = request.prior_attempts + attempts
        return [
            (
                e.index,
                self._result(e.message, status, error=reason, attempts=total, retryable=retryable),
            )
            for e in request.entries
        ]

    def _result(
        self,
        message: Message,
        status: SendStatus,
        *,
        message_id: str | None = None,
        error: str | None = None,
        attempts: int = 1,
        retryable: bool = False,
    ) -> SendResult:
        # Errors land in the ledger and in run metadata: no secrets, no addresses.
        return SendResult(
            send_id=message.send_id,
            status=status,
            provider_message_id=message_id,
            error=mask_emails_in_text(error) if error else None,
            attempts=attempts,
            retryable=retryable,
        )

    # -- rate limiting ---------------------------------------------------------------------

    def _block_for(self, seconds: float) -> None:
        """The provider said "not before now + seconds": every request of this provider waits.

        Within the budget, the shared limiter pauses every worker. Beyond it, requests check
        :meth:`_rate_limited_for` before going out and fail fast instead of each spending a
        request to be told the same thing.
        """
        deadline = self._clock() + max(0.0, seconds)
        with self._state_lock:
            self._blocked_until = max(self._blocked_until, deadline)
        if seconds <= self.max_rate_limit_wait:
            self._limiter.pause_until(deadline)

    def _rate_limited_for(self) -> float:
        with self._state_lock:
            until = self._blocked_until
        return max(0.0, until - self._clock())

    def _note_window(self, response: httpx.Response) -> None:
        """A successful answer saying the window is spent pauses everyone until it resets."""
        if response.status_code == 429 or not window_spent(response.headers):
            return
        reset = rate_limit_wait(response.headers)
        if reset is not None and 0 < reset <= self.max_rate_limit_wait:
            self._limiter.pause_for(reset)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_max, self._jitter)

    # -- texts -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _transport_reason(self, exc: httpx.HTTPError) -> str:
        return self._redact(describe_transport_error(exc, self.timeout))

    # -- hooks for adapters ----------------------------------------------------------------

    def build_item(self, message: Message) -> Any:
        """The JSON item for one message; ``ValueError`` if it cannot be sent at all."""
        raise NotImplementedError

    def encode(self, items: list[Any]) -> bytes:
        """The body of one request carrying ``items`` (default: a JSON array)."""
        return json.dumps(items).encode("utf-8")

    def chunks(self, entries: list[RequestEntry]) -> list[list[RequestEntry]]:
        """Group entries into requests (default: runs of ``batch_size``)."""
        size = self.batch_size
        return [entries[i : i + size] for i in range(0, len(entries), size)]

    def request_headers(self, body: bytes, key: str | None) -> dict[str, str]:
        """Headers of one attempt (called again on every retry)."""
        if key is not None and self.limits.idempotent:
            return {"Idempotency-Key": key}
        return {}

    def parse_accepted(
        self, response: httpx.Response, entries: list[RequestEntry]
    ) -> list[Delivery]:
        """Per-message outcome of a 2xx answer, aligned with ``entries`` (default: all sent)."""
        return [Delivery("sent") for _ in entries]

    def error_text(self, response: httpx.Response) -> str:
        """The provider's own words for a failed request."""
        data = json_or_none(response)
        if isinstance(data, dict):
            for name in ("message", "Message", "error", "detail"):
                value = data.get(name)
                if isinstance(value, str) and value:
                    return value
        return body_excerpt(response)

    def classify(self, response: httpx.Response) -> Rejection:
        """Decide what a non-2xx answer means; adapters refine it for their quirks."""
        status = response.status_code
        reason = f"HTTP {status}: {self.error_text(response)}"
        if status == 429:
            return Rejection("rate_limited", reason, wait=rate_limit_wait(response.headers))
        if status == 408 or status >= 500:
            return Rejection(
                "transient", reason, wait=parse_retry_after(response.headers.get("Retry-After"))
            )
        if status == 413:
            return Rejection("too_large", reason)
        if status in (400, 422):
            return Rejection("invalid", reason)
        if status == 409 and self.limits.idempotent:
            return Rejection("conflict", reason)
        return Rejection("permanent", reason)
