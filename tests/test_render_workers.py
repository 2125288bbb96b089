"""Rendering a big push in worker processes: the same emails, each sent once, and nothing lost
when a worker or the send step itself dies."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dagster_project import render_workers
from dagster_project.compose import render_batch
from dagster_project.links import LinkSettings
from dagster_project.policy import DispatchPolicy
from dagster_project.render_workers import RenderWorkers
from dagster_project.rendering import Renderer
from tests.support.factories import CART_SPEC, cart_row, dispatch, ledger_rows, write_eligibility
from tests.support.providers import RecordingProvider

LINKS = LinkSettings(
    public_url="http://127.0.0.1:8765", secret="test-render-workers-secret", generated=False
)


def _contexts(count: int, **overrides: Any) -> list[tuple[str, str]]:
    rows = [cart_row(f"w{i:04d}", **overrides) for i in range(count)]
    return [(row["send_id"], json.dumps(row, default=str)) for row in rows]


def test_workers_render_exactly_what_one_process_renders_in_the_batchs_order() -> None:
    batch = _contexts(7)
    # A row that is not JSON, one without an address, one with a broken loop, one too big:
    # each a failure with its reason, wherever its slice went.
    batch[1] = ("s-notjson", "{not json")
    batch[3] = ("s-noemail", _contexts(1, email=None)[0][1])
    batch[4] = ("s-broken", _contexts(1, items=None)[0][1])
    batch[6] = ("s-huge", _contexts(1, first_name="A" * 5000)[0][1])
    renderer = Renderer()
    expected = render_batch(
        CART_SPEC, renderer, batch, "shop@example.com", links=LINKS, max_message_bytes=8000
    )
    assert len(expected[0]) == 3 and len(expected[1]) == 4  # the test means what it says
    # Three workers for seven rows: slices of 3, 3 and 1.
    with RenderWorkers(3) as workers:
        got = workers.render(
            CART_SPEC, renderer, batch, "shop@example.com", links=LINKS, max_message_bytes=8000
        )
        # The workers stay up between batches.
        again = workers.render(CART_SPEC, renderer, batch[:2], "shop@example.com", links=LINKS)
    assert got == expected
    assert again == render_batch(CART_SPEC, renderer, batch[:2], "shop@example.com", links=LINKS)


def test_a_bug_in_a_worker_is_raised_in_the_send_step_as_it_would_be_there() -> None:
    with RenderWorkers(1) as workers:
        with pytest.raises(RuntimeError, match="a render worker failed"):
            workers.render(None, Renderer(), _contexts(1), "shop@example.com")  # type: ignore[arg-type]
        # And the workers are done: nothing of that call can be read as the next one's answer.
        with pytest.raises(render_workers.WorkersBroken):
            workers.render(CART_SPEC, Renderer(), _contexts(1), "shop@example.com", links=LINKS)


def test_an_empty_batch_and_fewer_rows_than_workers_render_as_one_process_does() -> None:
    renderer, batch = Renderer(), _contexts(2)
    with RenderWorkers(3) as workers:
        assert workers.render(CART_SPEC, renderer, [], "shop@example.com") == ([], [])
        got = workers.render(CART_SPEC, renderer, batch, "shop@example.com", links=LINKS)
    assert got == render_batch(CART_SPEC, renderer, batch, "shop@example.com", links=LINKS)


def test_an_interrupted_render_leaves_no_answer_behind_for_the_next_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ctrl-C (or Dagster's termination) while the first answer is being read: the second
    # worker's answer, a few hundred KB, is still in its pipe. Reading it as the next batch's
    # would put another batch's emails on the wire.
    reads = []

    def interrupted(stream: Any) -> Any:
        reads.append(stream)
        raise KeyboardInterrupt

    workers = RenderWorkers(2)
    pids = workers.pids
    with monkeypatch.context() as patch:
        patch.setattr(render_workers, "_read_frame", interrupted)
        with pytest.raises(KeyboardInterrupt):
            workers.render(CART_SPEC, Renderer(), _contexts(400), "shop@example.com", links=LINKS)
    assert len(reads) == 1
    with pytest.raises(render_workers.WorkersBroken, match="KeyboardInterrupt"):
        workers.render(CART_SPEC, Renderer(), _contexts(4), "shop@example.com", links=LINKS)
    workers.close()
    assert not any(_alive(pid) for pid in pids)


def test_the_workers_get_none_of_the_ticks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "NUDGE_LINK_SECRET": "link-secret-that-must-stay-home-0123456789",
        "NUDGE_SENDGRID_API_KEY": "SG.must-stay-home",
        "DBT_ENV_SECRET_NUDGE_PG_PASSWORD": "pg-must-stay-home",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    with RenderWorkers(1) as workers:
        # Rendering works without them: the link secret comes with the job.
        messages, _ = workers.render(
            CART_SPEC, Renderer(), _contexts(1), "shop@example.com", links=LINKS
        )
        environ = Path(f"/proc/{workers.pids[0]}/environ").read_bytes()
    assert len(messages) == 1 and LINKS.public_url in messages[0].html
    assert b"PATH=" in environ  # the file is what the test thinks it is
    for name, value in secrets.items():
        assert name.encode() not in environ and value.encode() not in environ


def test_a_worker_imports_only_what_rendering_needs() -> None:
    # Every push of 1,000 emails or more starts the workers, and their start-up is CPU the push
    # shares two cores with: pyarrow alone (reached through the PostgreSQL module) was 80 ms
    # of each worker's 210 ms of imports.
    heavy = ("pyarrow", "polars", "duckdb", "dagster", "httpx", "psycopg2")
    probe = (
        "import sys, dagster_project.render_workers; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    root = Path(render_workers.__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == ""


class _Spied(RenderWorkers):
    started: ClassVar[list[_Spied]] = []
    kill_first = False

    def __init__(self, processes: int) -> None:
        super().__init__(processes)
        self.rendered = 0
        self.started_pids = self.pids
        _Spied.started.append(self)

    def render(self, *args: Any, **kwargs: Any) -> Any:
        if _Spied.kill_first and self.rendered == 0:
            # A worker dies (the OOM killer, say) before it answers.
            os.kill(self.started_pids[0], signal.SIGKILL)
        self.rendered += 1
        return super().render(*args, **kwargs)


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> type[_Spied]:
    monkeypatch.setattr(render_workers, "RenderWorkers", _Spied)
    monkeypatch.setattr(render_workers, "MIN_SENDS", 20)
    _Spied.started = []
    _Spied.kill_first = False
    return _Spied


def _push(con: Any, processes: int) -> RecordingProvider:
    provider = RecordingProvider()
    dispatch(
        con,
        provider,
        run_id=f"run-{processes}",
        links=LINKS,
        policy=DispatchPolicy(batch_size=10, render_processes=processes),
    )
    return provider


def test_a_big_push_renders_in_workers_and_sends_the_same_emails_once(
    engine_con: Any, spied: type[_Spied]
) -> None:
    write_eligibility(engine_con, [cart_row(f"k{i:03d}") for i in range(25)])
    provider = _push(engine_con, processes=2)
    (workers,) = spied.started
    assert workers.rendered == 3  # batches of 10, 10 and 5
    assert sorted(m.send_id for m in provider.sent) == sorted(ledger_rows(engine_con))
    assert {status for status, _, _ in ledger_rows(engine_con).values()} == {"sent"}
    # The same emails as this process renders from the same rows, links and all.
    rows = [cart_row(f"k{i:03d}") for i in range(25)]
    alone, _ = render_batch(
        CART_SPEC,
        Renderer(),
        [(row["send_id"], json.dumps(row, default=str)) for row in rows],
        "shop@example.com",
        links=LINKS,
    )
    assert sorted(provider.sent, key=lambda m: m.send_id) == sorted(alone, key=lambda m: m.send_id)
    # The workers are gone with the push.
    assert len(workers.started_pids) == 2
    assert not any(_alive(pid) for pid in workers.started_pids)


def test_a_small_push_or_one_process_starts_no_worker(engine_con: Any, spied: type[_Spied]) -> None:
    write_eligibility(engine_con, [cart_row(f"k{i:03d}") for i in range(25)])
    provider = _push(engine_con, processes=1)
    assert len(provider.sent) == 25 and spied.started == []


def test_a_worker_that_dies_leaves_the_push_to_render_in_process_and_loses_nothing(
    engine_con: Any, spied: type[_Spied], caplog: pytest.LogCaptureFixture
) -> None:
    spied.kill_first = True
    write_eligibility(engine_con, [cart_row(f"k{i:03d}") for i in range(25)])
    with caplog.at_level(logging.WARNING, logger="dagster_project.dispatch"):
        provider = _push(engine_con, processes=2)
    assert "rendering in-process from now on" in caplog.text
    assert spied.started[0].rendered == 1  # the rest never went to the workers
    assert sorted(m.send_id for m in provider.sent) == sorted(ledger_rows(engine_con))
    assert len(provider.sent) == 25
    assert {status for status, _, _ in ledger_rows(engine_con).values()} == {"sent"}


_PARENT = """
import sys, time
from dagster_project.render_workers import RenderWorkers
workers = RenderWorkers(2)
print(*workers.pids, flush=True)
time.sleep(600)
"""


def test_workers_exit_when_the_send_step_is_killed() -> None:
    # SIGKILL leaves the parent no time to close anything: the workers must notice by
    # themselves (their stdin closes), or every killed tick would leave two processes behind.
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert parent.stdout is not None
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_workers_that_cannot_start_leave_the_push_to_render_in_process(
    engine_con: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_process(processes: int) -> RenderWorkers:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # fork: EAGAIN

    monkeypatch.setattr(render_workers, "RenderWorkers", no_process)
    monkeypatch.setattr(render_workers, "MIN_SENDS", 20)
    write_eligibility(engine_con, [cart_row(f"k{i:03d}") for i in range(25)])
    with caplog.at_level(logging.WARNING, logger="dagster_project.dispatch"):
        provider = _push(engine_con, processes=2)
    assert "rendering in-process: [Errno 11]" in caplog.text
    assert len(provider.sent) == 25
    assert {status for status, _, _ in ledger_rows(engine_con).values()} == {"sent"}
