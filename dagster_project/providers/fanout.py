"""One request per message, many at a time: the machinery the SES and SMTP adapters share.

Neither SES ``SendEmail`` nor an SMTP transaction carries more than one message, so these
adapters fan a batch out: every message is its own job on a ``ThreadPoolExecutor`` of
``max_concurrency`` workers, paced by one shared :class:`RateLimiter`, with its own retry loop.
An adapter says how to prepare a message (:meth:`FanoutProvider._prepare`) and how one attempt
goes (:meth:`FanoutProvider._try`, judged with the fates of ``retry.py``);
:class:`FanoutProvider` does the rest:

* one result per message, in input order; ``send()`` never raises for one message;
* ``sent``: done. ``permanent``: failed, not retried. ``transient``: backoff with jitter (the
  same as the HTTP adapters'), then failed *retryable* after ``max_attempts``;
* ``uncertain``: the provider may have taken it. Neither SES nor SMTP has an idempotency key,
  so it ends ``unknown`` and is never resent;
* ``fatal``: a problem that is no message's fault and that no retry fixes (credentials, server
  set-up). The first one stops the rest of the batch without further requests, and every
  message of it ends failed *retryable*, so a later tick sends them once the cause is fixed;
* every attempt is journaled just before it goes out, and the message's result as soon as it
  is known (:class:`~dagster_project.providers.base.Journal`), so a crash leaves at most one
  message per worker in doubt;
* ``close()`` cancels queued messages, waits for in-flight ones, then lets the adapter release
  its connections (:meth:`FanoutProvider._release`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from dagster_project.masking import mask_email, mask_emails_in_text
from dagster_project.providers.base import (
    HandoverError,
    Journal,
    Message,
    ProviderLimits,
    SendResult,
    SendStatus,
)
from dagster_project.providers.pool import PooledProvider
from dagster_project.providers.ratelimit import RateLimiter
from dagster_project.providers.retry import Fate, backoff_delay

logger = logging.getLogger(__name__)

JobT = TypeVar("JobT")


@dataclass(frozen=True)
class Attempt:
    """How one attempt at one message went."""

    fate: Fate
    reason: str = ""  # redacted by the adapter; recipients are masked here
    message_id: str | None = None  # for "sent" and "uncertain"


class Unsendable(Exception):
    """Raised by :meth:`FanoutProvider._prepare`: the message can never be sent as it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Batch:
    """State shared by the messages of one ``send()`` call."""

    def __init__(self, journal: Journal | None) -> None:
        self.journal = journal
        self.fatal: str | None = None  # set by the first "fatal" outcome


def _failed(send_id: str, error: str, attempts: int, *, retryable: bool = False) -> SendResult:
    return SendResult(
        send_id=send_id, status="failed", error=error, attempts=attempts, retryable=retryable
    )


class FanoutProvider(PooledProvider, Generic[JobT]):
    """Base class of the one-request-per-message adapters; see the module docstring.

    Subclasses call :func:`~dagster_project.providers.retry.check_tuning` first thing,
    ``super().__init__`` once the rest of their configuration is known to be good, and fill in
    the hooks at the bottom.
    """

    name: str
    # Texts for logs and errors: "<who> may have <verb> it", "<fatal_label>, stopping this batch"
    uncertain_who: ClassVar[str] = "the server"
    uncertain_verb: ClassVar[str] = "accepted"
    fatal_label: ClassVar[str] = "cannot use the server"
    limits: ProviderLimits

    def __init__(
        self,
        *,
        timeout: float,
        max_concurrency: int,
        max_attempts: int,
        requests_per_second: float | None,
        backoff_base: float,
        backoff_max: float,
        sleep: Callable[[float], None],
        jitter: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self.timeout = float(timeout)
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # One request per message, so each message has its own result. max_batch keeps a batch
        # short (~7 s at SES's default rate): a crash leaves few rows without a settled status.
        self.limits = ProviderLimits(
            max_batch=100,
            idempotent=False,
            requests_per_second=requests_per_second,
            per_message_results=True,
        )
        self._sleep = sleep
        self._jitter = jitter
        self._limiter = RateLimiter(requests_per_second, clock=clock, sleep=sleep)
        self._start_pool(max_concurrency)

    def send(
        self,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        journal: Journal | None = None,
    ) -> list[SendResult]:
        """Send every message, at most ``max_concurrency`` at a time; results in input order.

        ``idempotency_key`` is ignored: the provider has none (see ``limits.idempotent``).
        """
        self._check_open()
        if not messages:
            return []
        batch = Batch(journal)
        futures = [self._executor.submit(self._send_one, m, batch) for m in messages]
        results = [f.result() for f in futures]
        counts = {s: sum(r.status == s for r in results) for s in ("sent", "failed", "unknown")}
        logger.info(
            "%s: %d sent, %d failed, %d unknown, %d attempts",
            self.name,
            counts["sent"],
            counts["failed"],
            counts["unknown"],
            sum(r.attempts for r in results),
        )
        return results

    # -- internals -------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_max, self._jitter)

    def _send_one(self, message: Message, batch: Batch) -> SendResult:
        """Never raises: an escaping exception would lose the batch's other results."""
        handed_over: list[bool] = []
        try:
            result = self._send_with_retries(message, batch, handed_over)
        except Exception as exc:
            self._on_unexpected_error()
            reason = mask_emails_in_text(
                self._redact(f"unexpected error: {type(exc).__name__}: {exc}")
            )
            logger.error(
                "%s: send %s to %s failed: %s",
                self.name,
                message.send_id,
                mask_email(message.to_email),
                reason,
            )
            # Once handed over, it may have been delivered: 'unknown' cannot lead to a second one.
            status: SendStatus = "unknown" if handed_over else "failed"
            result = SendResult(send_id=message.send_id, status=status, error=reason)
        if batch.journal is not None and handed_over:
            try:
                batch.journal.answered([result])
            except HandoverError as exc:  # the batch's settle still records the result
                logger.error("%s: could not journal an answer: %s", self.name, exc)
        return result

    def _send_with_retries(
        self, message: Message, batch: Batch, handed_over: list[bool]
    ) -> SendResult:
        send_id = message.send_id
        masked_to = mask_email(message.to_email)
        try:
            job = self._prepare(message)
        except Unsendable as exc:
            logger.warning(
                "%s: send %s to %s not sent: %s", self.name, send_id, masked_to, exc.reason
            )
            return _failed(send_id, exc.reason, attempts=0)

        attempts = 0
        while True:
            if batch.fatal is not None:
                return _failed(send_id, f"not sent: {batch.fatal}", attempts, retryable=True)
            self._limiter.acquire()
            if batch.journal is not None:
                try:
                    batch.journal.handing_over([send_id], None)
                except HandoverError as exc:
                    # Not sent: nothing goes out that the ledger could not account for (an
                    # earlier attempt, if any, failed transiently: nothing was delivered).
                    return _failed(send_id, f"not sent: {exc}", attempts, retryable=True)
                handed_over.append(True)
            tried = self._try(job, attempts)
            if tried is None:
                continue
            if isinstance(tried, SendResult):
                return tried

            attempts += 1
            reason = mask_emails_in_text(tried.reason)
            if tried.fate == "sent":
                logger.debug(
                    "%s: send %s to %s accepted%s",
                    self.name,
                    send_id,
                    masked_to,
                    f": {reason}" if reason else "",
                )
                return SendResult(
                    send_id=send_id,
                    status="sent",
                    provider_message_id=tried.message_id,
                    attempts=attempts,
                )
            if tried.fate == "uncertain":
                logger.warning(
                    "%s: send %s to %s may have been %s (%s); not retried",
                    self.name,
                    send_id,
                    masked_to,
                    self.uncertain_verb,
                    reason,
                )
                return SendResult(
                    send_id=send_id,
                    status="unknown",
                    provider_message_id=tried.message_id,
                    error=(
                        f"{reason}; {self.uncertain_who} may have {self.uncertain_verb} it, "
                        "not retried"
                    ),
                    attempts=attempts,
                )
            if tried.fate == "fatal":
                batch.fatal = reason
                logger.error("%s: %s, stopping this batch: %s", self.name, self.fatal_label, reason)
                return _failed(send_id, reason, attempts, retryable=True)
            if tried.fate != "transient":  # permanent, or a fate no retry can change
                logger.warning(
                    "%s: send %s to %s rejected, not retrying: %s",
                    self.name,
                    send_id,
                    masked_to,
                    reason,
                )
                return _failed(send_id, reason, attempts)
            # transient
            if attempts >= self.max_attempts:
                logger.warning(
                    "%s: send %s to %s failed after %d attempts: %s",
                    self.name,
                    send_id,
                    masked_to,
                    attempts,
                    reason,
                )
                return _failed(send_id, reason, attempts, retryable=True)
            delay = self._backoff(attempts)
            logger.warning(
                "%s: send %s to %s attempt %d/%d failed (%s); retrying in %.2fs",
                self.name,
                send_id,
                masked_to,
                attempts,
                self.max_attempts,
                reason,
                delay,
            )
            self._sleep(delay)

    # -- hooks for adapters ----------------------------------------------------------------

    def _prepare(self, message: Message) -> JobT:
        """Everything one message's attempts need; :class:`Unsendable` if it cannot be sent."""
        raise NotImplementedError

    def _try(self, job: JobT, attempts: int) -> Attempt | SendResult | None:
        """One attempt, after the rate limiter let it through; ``attempts`` made so far.

        Return an :class:`Attempt` to be judged as the module docstring says, ``None`` for
        "that was no attempt, try again" (a throttling pause, a reconnect), or a final
        :class:`SendResult` the adapter decided itself.
        """
        raise NotImplementedError

    def _redact(self, text: str) -> str:
        """``text`` without the adapter's secrets."""
        raise NotImplementedError

    def _on_unexpected_error(self) -> None:
        """An attempt raised something unexpected; drop whatever state it may have spoiled."""
