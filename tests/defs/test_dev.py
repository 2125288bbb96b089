"""``make dev`` as a newcomer runs it: the Dagster UI loads nudge with everything in it.

The shell has no virtualenv activated (``.venv/bin`` is not on PATH), exactly as after
``make demo`` on a fresh clone; the test asks the running webserver's GraphQL API what it loaded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dagster_project.config import PROJECT_ROOT

pytestmark = pytest.mark.dbt

QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              jobs { name }
              schedules { name cronSchedule }
              assetNodes {
                assetKey { path }
                assetChecksOrError { ... on AssetChecks { checks { name } } }
              }
            }
          }
        }
      }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _workspace(url: str, deadline: float) -> dict[str, Any]:
    """The loaded workspace, once the webserver answers and the code location has loaded."""
    last: Any = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(f"{url}/graphql", json={"query": QUERY}, timeout=10).json()
            entries = answer["data"]["workspaceOrError"]["locationEntries"]
            if entries and entries[0]["locationOrLoadError"] is not None:
                return entries[0]
            last = answer
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"the UI never loaded the code location: {last}")


def test_make_dev_loads_every_asset_check_job_and_schedule(tmp_path: Path) -> None:
    port = _free_port()
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    env = {**os.environ, "PATH": path, "DAGSTER_HOME": str(tmp_path / "home")}
    env.pop("VIRTUAL_ENV", None)
    dev = subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"DEV_PORT={port}"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # dagster dev ignores SIGTERM when SIGINT is ignored, as it is in a background job.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        entry = _workspace(f"http://127.0.0.1:{port}", time.monotonic() + 240)
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            output, _ = dev.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            output, _ = dev.communicate()
    location = entry["locationOrLoadError"]
    assert entry["name"] == "nudge"
    assert location["__typename"] == "RepositoryLocation", location.get("message", output)
    (repository,) = location["repositories"]
    assert "nudge_tick" in {job["name"] for job in repository["jobs"]}
    assert {(s["name"], s["cronSchedule"]) for s in repository["schedules"]} == {
        ("hourly_tick", "0 * * * *"),
        ("transactional_tick", "5-55/5 * * * *"),
        ("daily_reporting", "30 0 * * *"),
    }
    assets = {
        "/".join(node["assetKey"]["path"]): {
            check["name"] for check in node["assetChecksOrError"].get("checks", [])
        }
        for node in repository["assetNodes"]
    }
    assert "audience/abandoned_cart_eligibility" in assets
    assert assets["nudge/send_abandoned_cart"] == {
        "mass_send_guard",
        "no_duplicate_deliveries",
        "failure_rate",
        "deliverability",
        "source_freshness",
    }
    assert assets["nudge/send_welcome"] == {
        "mass_send_guard",
        "no_duplicate_deliveries",
        "failure_rate",
        "deliverability",
    }
    # Transactional mail is never held for deliverability.
    assert assets["nudge/send_confirm_subscription"] == {
        "mass_send_guard",
        "no_duplicate_deliveries",
        "failure_rate",
    }
    # dbt's own tests are asset checks too.
    assert any(checks for key, checks in assets.items() if key.startswith("audience/"))
    assert "was not found on PATH" not in output
