"""nudge's own commands as real processes (``nudge run``, ``nudge serve``), for the tests and
benchmarks that need separate processes: locks, crashes, a service beside a tick."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def nudge(*args: str, env: dict[str, str], quiet: bool = False) -> subprocess.Popen[str]:
    """``nudge ARGS`` from this virtualenv; output captured (or dropped with ``quiet``)."""
    stream = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("nudge")), *args],
        env=env,
        stdout=stream,
        stderr=stream,
        text=True,
    )


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
