"""A request-rate limiter shared by every worker thread of one provider.

Two things slow a provider down:

* its configured rate (``requests_per_second``): a token bucket, so a burst up to ``burst``
  requests goes out at once and the long-run rate never exceeds the limit;
* the provider telling us to wait (a 429 with ``Retry-After``, or rate-limit headers saying the
  window is spent): :meth:`RateLimiter.pause_until` stops *every* worker until then, not just
  the one that got the 429, so eight threads do not each burn a request finding out.

Waiting here is not an attempt: adapters count attempts only for requests that failed.
``clock`` and ``sleep`` are injectable so tests can check the schedule without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Thread-safe token bucket plus a shared "nobody sends before T" pause."""

    def __init__(
        self,
        requests_per_second: float | None,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, got {requests_per_second}")
        self.rate = requests_per_second
        self.burst = float(burst if burst is not None else max(1, int(requests_per_second or 1)))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()
        self._paused_until = 0.0
        self.waited_seconds = 0.0  # total time workers spent waiting, for logs and benchmarks

    def acquire(self) -> float:
        """Block until one request may go out; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                delay = self._paused_until - now
                if delay <= 0:
                    if self.rate is None:
                        self.waited_seconds += waited
                        return waited
                    self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                    self._updated = now
                    if self._tokens >= 1:
                        self._tokens -= 1
                        self.waited_seconds += waited
                        return waited
                    delay = (1 - self._tokens) / self.rate
            self._sleep(delay)
            waited += delay

    def pause_until(self, deadline: float) -> None:
        """No worker sends before ``deadline`` (a ``clock()`` value); later deadlines win."""
        with self._lock:
            self._paused_until = max(self._paused_until, deadline)

    def pause_for(self, seconds: float) -> None:
        """No worker sends for the next ``seconds``."""
        self.pause_until(self._clock() + max(0.0, seconds))
