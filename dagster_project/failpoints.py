"""Named crash points for the kill-and-rerun tests: ``NUDGE_FAILPOINTS=after_claim:2``.

A failpoint listed in ``NUDGE_FAILPOINTS`` (comma separated, ``name`` or ``name:N`` for the
N-th time it is reached) kills the process with SIGKILL right there: no ``finally`` blocks, no
flushes, exactly what the OOM killer or a lost machine does. The tests run a real send in a
subprocess with a failpoint set, then rerun and check nothing was lost or sent twice. With the
variable unset (always, in production) :func:`hit` is a dictionary lookup.

A pause point (``NUDGE_PAUSEPOINT=name=/path/to/file``) stops the process at ``name`` instead,
holding whatever it holds (the warehouse lock), until the test creates the file: how the tests
make something happen at an exact moment of a real run (an unsubscribe between the build and
the push). It announces itself by creating ``<file>.reached``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

ENV_VAR = "NUDGE_FAILPOINTS"
PAUSE_VAR = "NUDGE_PAUSEPOINT"
PAUSE_LIMIT_SECONDS = 300
_hits: Counter[str] = Counter()
_lock = threading.Lock()


def _armed() -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in os.environ.get(ENV_VAR, "").split(","):
        name, _, nth = item.strip().partition(":")
        if name:
            armed[name] = int(nth or 1)
    return armed


def hit(name: str) -> None:
    """Die here if this failpoint is armed and reached for the N-th time."""
    if ENV_VAR not in os.environ:
        return
    armed = _armed()
    if name not in armed:
        return
    with _lock:
        _hits[name] += 1
        count = _hits[name]
    if count == armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)


def pause(name: str) -> None:
    """Wait here until the test says go, if this pause point is armed."""
    armed = os.environ.get(PAUSE_VAR)
    if not armed:
        return
    wanted, _, path = armed.partition("=")
    if wanted != name or not path:
        return
    with open(path + ".reached", "w"):
        pass
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
