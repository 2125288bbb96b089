"""Kill a real send process with SIGKILL mid-push, rerun, and check nothing was lost or sent
twice.

Each test prepares a warehouse with one trigger's eligibility table, starts
``tests.crash_worker`` as a subprocess pushing to a local HTTP server (or the outbox), kills it,
and then runs the same push again in this process. After the rerun:

* nothing planned is lost: every due send_id is in the ledger in a settled state;
* nothing ``sent`` is sent again: the server received each send_id at most once, and the history
  never settled a send_id ``sent`` twice;
* what is in doubt is a known, listed set: only the batch in flight at the kill is ``unknown``
  (non-idempotent provider), or it was resent with its key (idempotent provider).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagster_project import ledger
from dagster_project.warehouse import connect
from tests import crash_worker
from tests.esp_server import EspServer, Reply
from tests.factories import AS_OF, cart_row, write_eligibility

ROOT = Path(__file__).resolve().parent.parent
SENDS = 30
BATCH = 10
SETTLED = {"sent", "unknown", "failed_permanent", "failed_retryable", "skipped", "expired"}


def _prepare(tmp_path: Path, count: int = SENDS) -> tuple[Path, list[str]]:
    warehouse = tmp_path / "warehouse.duckdb"
    con = connect(warehouse)
    ledger.ensure_ledger(con)
    rows = [cart_row(f"k{i:04d}") for i in range(count)]
    write_eligibility(con, rows)
    con.close()
    return warehouse, [r["send_id"] for r in rows]


def _start(warehouse: Path, provider: str, url: str, tmp_path: Path, failpoints: str = ""):
    env = {**os.environ, "NUDGE_FAILPOINTS": failpoints} if failpoints else dict(os.environ)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.crash_worker",
            "--warehouse",
            str(warehouse),
            "--provider",
            provider,
            "--url",
            url,
            "--outbox",
            str(tmp_path / "outbox"),
            "--as-of",
            AS_OF.isoformat(),
            "--run-id",
            "doomed",
            "--batch-size",
            str(BATCH),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rerun(warehouse: Path, provider: str, url: str, tmp_path: Path):
    return crash_worker.push(
        warehouse,
        crash_worker.build(provider, url, tmp_path / "outbox"),
        as_of=AS_OF.isoformat(),
        run_id="rerun",
        batch_size=BATCH,
    )


def _ledger(warehouse: Path) -> dict[str, str]:
    con = connect(warehouse)
    try:
        return dict(con.execute("select send_id, status from nudge.send_ledger").fetchall())
    finally:
        con.close()


def _twice_sent_in_history(warehouse: Path) -> int:
    con = connect(warehouse)
    try:
        return ledger.duplicate_deliveries(con, trigger="abandoned_cart")
    finally:
        con.close()


def _assert_invariants(warehouse: Path, due: list[str], received: list[str]) -> dict[str, str]:
    statuses = _ledger(warehouse)
    assert set(statuses) == set(due), "a planned send was lost"
    assert set(statuses.values()) <= SETTLED, statuses
    assert len(received) == len(set(received)), "the server received a send_id twice"
    sent = {s for s, status in statuses.items() if status == "sent"}
    unknown = {s for s, status in statuses.items() if status == "unknown"}
    assert sent <= set(received), "marked sent but never sent"
    assert set(received) <= sent | unknown, "delivered but the ledger says it was not"
    assert _twice_sent_in_history(warehouse) == 0
    return statuses


@pytest.mark.parametrize(
    ("failpoint", "in_doubt"),
    [
        ("after_plan", 0),  # nothing reached the provider
        ("after_claim:2", BATCH),  # batch 2 marked sending, request never made
        ("after_send:2", BATCH),  # batch 2 delivered, answer never recorded
        ("mid_settle:2", BATCH),  # batch 2's settle rolled back by the kill
    ],
)
def test_killed_sendgrid_push_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, failpoint: str, in_doubt: int
) -> None:
    warehouse, due = _prepare(tmp_path)
    with EspServer(api_key=crash_worker.API_KEY) as server:
        worker = _start(warehouse, "sendgrid", server.url, tmp_path, failpoint)
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGKILL, err
        received_before = server.received_send_ids()
        summary = _rerun(warehouse, "sendgrid", server.url, tmp_path)
        received = server.received_send_ids()

    statuses = _assert_invariants(warehouse, due, received)
    unknown = sorted(s for s, status in statuses.items() if status == "unknown")
    # Only the batch in flight is in doubt; SendGrid has no idempotency key, so not resent.
    assert len(unknown) == in_doubt
    assert summary.unknown == in_doubt
    assert sum(status == "sent" for status in statuses.values()) == SENDS - in_doubt
    if failpoint.startswith("after_claim"):
        assert not set(unknown) & set(received)  # claimed, but the request never went out
    if failpoint.startswith(("after_send", "mid_settle")):
        assert set(unknown) <= set(received_before)  # delivered by the killed run
    # The operator's view lists exactly them.
    con = connect(warehouse)
    try:
        assert sorted(r[0] for r in ledger.unknown_sends(con)) == unknown
    finally:
        con.close()


@pytest.mark.parametrize("failpoint", ["after_send:2", "mid_settle:2"])
def test_killed_idempotent_push_resends_the_batch_with_its_key(
    tmp_path: Path, failpoint: str
) -> None:
    warehouse, due = _prepare(tmp_path)
    worker = _start(warehouse, "outbox", "", tmp_path, failpoint)
    worker.communicate(timeout=120)
    assert worker.returncode == -signal.SIGKILL
    on_disk_before = {p.stem for p in (tmp_path / "outbox").glob("*/*.eml")}
    assert len(on_disk_before) == 2 * BATCH  # batch 2 reached the outbox before the kill
    summary = _rerun(warehouse, "outbox", "", tmp_path)
    statuses = _ledger(warehouse)
    assert set(statuses) == set(due)
    assert set(statuses.values()) == {"sent"}
    # Batch 2 (in flight) and batch 3 (planned, never claimed) are taken over; none in doubt.
    assert summary.resumed == 2 * BATCH and summary.unknown == 0
    con = connect(warehouse)
    try:
        keys = con.execute(
            "select batch_id, count(*) from nudge.send_ledger group by batch_id"
        ).fetchall()
        first_key = con.execute(
            "select distinct batch_id from nudge.send_events where status = 'sending' "
            "and send_id in (select send_id from nudge.send_ledger where attempts = 2)"
        ).fetchall()
    finally:
        con.close()
    # Three batches of ten, three keys: the resumed batch went out again as one batch under its
    # original key (its rows were handed over twice, both times with the same key).
    assert sorted(n for _, n in keys) == [BATCH, BATCH, BATCH]
    assert len(first_key) == 1 and first_key[0][0] in {k for k, _ in keys}
    assert {p.stem for p in (tmp_path / "outbox").glob("*/*.eml")} == set(due)
    assert _twice_sent_in_history(warehouse) == 0


@pytest.mark.parametrize("kill_after_requests", [1, 37, 90])
def test_a_kill_at_a_random_moment_mid_push_leaves_a_listed_set_in_doubt(
    tmp_path: Path, kill_after_requests: int
) -> None:
    warehouse, due = _prepare(tmp_path, count=120)
    with EspServer(api_key=crash_worker.API_KEY, default=Reply(delay=0.02)) as server:
        worker = _start(warehouse, "sendgrid", server.url, tmp_path)
        deadline = time.monotonic() + 60
        while len(server.received_send_ids()) < kill_after_requests:
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, "the worker never got going"
            time.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        summary = _rerun(warehouse, "sendgrid", server.url, tmp_path)
        received = server.received_send_ids()
    statuses = _assert_invariants(warehouse, due, received)
    unknown = [s for s, status in statuses.items() if status == "unknown"]
    # At most the batch in flight is in doubt; everything else was sent exactly once.
    assert len(unknown) <= BATCH
    assert sum(st == "sent" for st in statuses.values()) + len(unknown) == len(due)
    assert summary.sent > 0  # the rerun finished what the killed run left


@pytest.mark.parametrize("failpoint", ["after_send:2", "mid_settle:2"])
def test_killed_resend_push_is_resent_with_the_same_keys_and_delivered_once(
    tmp_path: Path, failpoint: str
) -> None:
    warehouse, due = _prepare(tmp_path)
    with EspServer(api_key=crash_worker.RESEND_KEY) as server:
        worker = _start(warehouse, "resend", server.url, tmp_path, failpoint)
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGKILL, err
        delivered_by_the_dead_run = server.accepted_send_ids()
        keys_before = {r.idempotency_key for r in server.send_requests()}
        summary = _rerun(warehouse, "resend", server.url, tmp_path)
        # Batch 2 went out again under its original key: the server replayed its first answer.
        replays = [r for r in server.send_requests() if r.replayed]
        assert replays and {r.idempotency_key for r in replays} <= keys_before
        assert server.duplicate_deliveries() == {}
        assert server.accepted_send_ids() == set(due)
    statuses = _ledger(warehouse)
    assert set(statuses) == set(due) and set(statuses.values()) == {"sent"}
    assert len(delivered_by_the_dead_run) == 2 * BATCH
    assert summary.unknown == 0
    assert _twice_sent_in_history(warehouse) == 0
