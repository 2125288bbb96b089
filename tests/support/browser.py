"""A real headless browser (Debian's ``chromium``) for the pages nudge writes and serves.

:func:`load` opens a page the way a person's browser would and returns the DOM after scripts
ran plus every console message, so tests can assert that a page renders, shows the right
figures and logs no errors. Without Chromium the tests that need it skip with one reason, unless
``NUDGE_REQUIRE_BROWSER`` is set (``.ci/run`` sets it and installs Chromium), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# What a headless Chromium needs on a closed, screenless machine (and as root).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
_CONSOLE = re.compile(r"CONSOLE\(\d+\)\] \"(?P<message>.*)\", source: (?P<source>.*)")


def chromium() -> str:
    """The browser's path, or skip (fail under NUDGE_REQUIRE_BROWSER) when there is none."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    reason = "no headless Chromium on PATH (apt install chromium)"
    if os.environ.get("NUDGE_REQUIRE_BROWSER", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; NUDGE_REQUIRE_BROWSER is set")
    pytest.skip(f"{reason}; set NUDGE_REQUIRE_BROWSER=1 to require it")


@dataclass(frozen=True)
class Page:
    dom: str  # the document after scripts ran
    console: list[str]  # console messages, "message (source)"

    @property
    def errors(self) -> list[str]:
        return [m for m in self.console if "error" in m.lower()]


def load(url: str, *, screenshot: Path | None = None, budget_ms: int = 5000) -> Page:
    """Open ``url`` (``file://`` or ``http://``) headless; the DOM, console and a screenshot."""
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="nudge-chromium-") as profile:
        common = [browser, *FLAGS, f"--user-data-dir={profile}"]
        common.append(f"--virtual-time-budget={budget_ms}")
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False
        )
        if screenshot is not None:
            subprocess.run(
                [*common, f"--screenshot={screenshot}", "--window-size=1280,1600", url],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
    if dom.returncode != 0:
        raise AssertionError(f"chromium failed on {url}: {dom.stderr[-2000:]}")
    console = [f"{m.group('message')} ({m.group('source')})" for m in _CONSOLE.finditer(dom.stderr)]
    return Page(dom=dom.stdout, console=console)
