"""The life cycle shared by the adapters that send from a pool of worker threads.

Both the HTTP core (``http.py``: one request per batch of messages) and the fan-out core
(``fanout.py``: one request per message) run their requests on a ``ThreadPoolExecutor`` of
``max_concurrency`` workers; this is the part they share: a context manager, a ``close()`` that
cancels what is queued and waits for what is in flight, and a refusal to send once closed.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Self

from dagster_project.providers.base import ProviderError, ProviderLimits


class PooledProvider:
    """Base class of the adapters with a worker pool; subclasses call :meth:`_start_pool`."""

    name: str
    limits: ProviderLimits

    def _start_pool(self, max_concurrency: int) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix=f"nudge-{self.name}"
        )
        self._closed = False
        self._close_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderError(f"{type(self).__name__} is closed")

    def close(self) -> None:
        """Cancel queued requests, wait for in-flight ones, release connections. Idempotent.

        After a normal ``send()`` nothing is queued. If the run is being stopped mid-batch
        (SIGTERM, an exception), queued requests are cancelled rather than sent after the run
        has given up recording them: they were never handed over, so the next tick sends them.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._release()

    def _release(self) -> None:
        """Called once by :meth:`close`, after the last request finished: close connections."""
