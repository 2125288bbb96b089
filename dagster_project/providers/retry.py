"""Trying again: the one vocabulary for how an attempt went, backoff, and sane worker settings.

Every adapter judges each attempt with a :data:`Fate`; the HTTP core (``http.py``) and the
one-message-per-request core (``fanout.py``) act on it the same way: ``sent`` is done,
``transient`` is tried again after :func:`backoff_delay`, ``uncertain`` may have been delivered
(never retried without an idempotency key), the others are final for that message or request.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Literal

from dagster_project.providers.base import ProviderConfigError

# How one attempt went (a request, or one SMTP transaction):
#   sent          the provider took it
#   rate_limited  the provider asked us to come back later (not an attempt at the message)
#   transient     failed, nothing delivered, worth trying again (5xx, 408, no connection)
#   uncertain     the request went out but no answer came back: it may have been delivered
#   conflict      the provider says the idempotency key was used for another payload
#   invalid       the provider rejected the payload (400/422): split a batch to find the row
#   too_large     the payload is over the provider's size limit (413)
#   permanent     rejected, and trying again cannot help
#   fatal         no message's fault and no retry fixes it (credentials, server set-up):
#                 stop the batch, fail its messages retryable for a later tick
Fate = Literal[
    "sent",
    "rate_limited",
    "transient",
    "uncertain",
    "conflict",
    "invalid",
    "too_large",
    "permanent",
    "fatal",
]


def backoff_delay(
    attempt: int, base: float, cap: float, jitter: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped at ``cap``.

    ``attempt`` counts from 1; ``jitter`` returns a number in [0, 1).
    """
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return ceiling / 2 + (ceiling / 2) * jitter()


def check_worker_settings(timeout: float, max_concurrency: int, max_attempts: int) -> None:
    """The settings every provider with a worker pool and a retry loop needs to be sane."""
    if timeout <= 0:
        raise ProviderConfigError(f"timeout must be positive, got {timeout}")
    if max_concurrency < 1:
        raise ProviderConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if max_attempts < 1:
        raise ProviderConfigError(f"max_attempts must be >= 1, got {max_attempts}")


def check_tuning(
    timeout: float,
    max_concurrency: int,
    max_attempts: int,
    requests_per_second: float | None,
    max_rate_limit_wait: float = 0.0,
) -> None:
    """Raise :class:`ProviderConfigError` for settings no send could work with."""
    check_worker_settings(timeout, max_concurrency, max_attempts)
    if requests_per_second is not None and requests_per_second <= 0:
        raise ProviderConfigError(
            f"requests_per_second must be positive (or unset), got {requests_per_second}"
        )
    if max_rate_limit_wait < 0:
        raise ProviderConfigError(f"max_rate_limit_wait must be >= 0, got {max_rate_limit_wait}")


class SleepClock:
    """A monotonic clock that also moves forward by whatever an injected ``sleep`` skipped.

    Tests inject a ``sleep`` that records instead of sleeping; the rate limiter computes its
    waits from a clock, and with the real clock it would spin until real time caught up. This
    clock adds the part of each wait that real time did not cover: all of it for a recorder,
    nothing for a ``sleep`` that really sleeps (a cancellable ``Event.wait``, say), so the
    rate limit stays honest either way.
    """

    def __init__(self, sleep: Callable[[float], None]) -> None:
        self._inner = sleep
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def sleep(self, seconds: float) -> None:
        started = time.monotonic()
        self._inner(seconds)
        skipped = seconds - (time.monotonic() - started)
        if skipped > 0:
            with self._lock:
                self._offset += skipped
