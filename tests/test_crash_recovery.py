"""Kill a real send process with SIGKILL mid-push, rerun, and check nothing was lost or sent
twice, and that what is left in doubt is only what was on the wire.

Each test prepares a warehouse with one trigger's eligibility table, starts
``tests.support.crash_worker`` as a subprocess pushing to a local HTTP server (or the outbox),
kills it, and runs the same push again in this process. After the rerun:

* nothing planned is lost: every due send_id is in the ledger in a settled state;
* nothing is sent twice: the server received each send_id at most once (or, with an
  idempotency key, accepted it once), and the history never settled a send_id ``sent`` twice;
* the set in doubt is bounded by what was handed to the network at the kill: a request is
  journaled just before it goes out and when its answer comes back, so at most one request per
  worker is ``unknown`` (``max_concurrency`` one-message requests for SendGrid, one batch
  request for Postmark), and none through an idempotent provider, which resends it under its
  key.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from dagster_project import guards, ledger
from dagster_project.cli import main
from dagster_project.config import POSTGRES_PASSWORD_VAR
from dagster_project.guards import JournalElsewhereError
from dagster_project.runs import TriggerSummary
from dagster_project.warehouse import connect
from tests.support import crash_worker
from tests.support.esp_server import EspServer, Reply
from tests.support.factories import AS_OF, cart_row, write_eligibility
from tests.support.ledger_steps import journal
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
SETTLED = {"sent", "unknown", "failed_permanent", "failed_retryable", "skipped", "expired"}
API_KEYS = {
    "sendgrid": crash_worker.API_KEY,
    "postmark": crash_worker.POSTMARK_TOKEN,
    "resend": crash_worker.RESEND_KEY,
}
# Seeded, so a failure names kill points anyone can replay; NUDGE_KILL_SEED explores others.
SEED = int(os.environ.get("NUDGE_KILL_SEED", "20261130"))


@dataclass
class Warehouse:
    """Where a crash test's ledger lives: a DuckDB file, or a database on a PostgreSQL server
    (its hand-over journal then in ``state``)."""

    value: str  # the file's path, or the postgresql:// URL
    state: Path
    server: PostgresServer | None = None

    @property
    def password(self) -> str:
        return self.server.password if self.server else ""

    @contextmanager
    def connect(self) -> Iterator[Any]:
        con: Any = self.server.warehouse(self.state) if self.server else connect(Path(self.value))
        try:
            yield con
        finally:
            con.close()


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    """A crash test run on each engine."""
    if request.param == "duckdb":
        return Warehouse(str(tmp_path / "warehouse.duckdb"), tmp_path / "state")
    server: PostgresServer = request.getfixturevalue("postgres_cluster")
    database = server.new_database("crash_" + os.urandom(6).hex())
    url = f"postgresql://{database.user}@{database.host}:{database.port}/{database.dbname}"
    return Warehouse(url, tmp_path / "state", database)


def _prepare(
    tmp_path: Path, count: int, warehouse: Warehouse | None = None
) -> tuple[Warehouse, list[str]]:
    warehouse = warehouse or Warehouse(str(tmp_path / "warehouse.duckdb"), tmp_path / "state")
    rows = [cart_row(f"k{i:04d}") for i in range(count)]
    with warehouse.connect() as con:
        ledger.ensure_ledger(con)
        write_eligibility(con, rows)
    return warehouse, [r["send_id"] for r in rows]


def _start(
    warehouse: Warehouse,
    provider: str,
    url: str,
    tmp_path: Path,
    *,
    batch: int,
    failpoints: str = "",
    settle_every: int | None = None,
) -> subprocess.Popen[str]:
    env = {**os.environ, POSTGRES_PASSWORD_VAR: warehouse.password}
    if failpoints:
        env["NUDGE_FAILPOINTS"] = failpoints
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.crash_worker",
            "--warehouse",
            warehouse.value,
            "--state-dir",
            str(warehouse.state),
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
            str(batch),
            *(["--settle-every", str(settle_every)] if settle_every else []),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rerun(
    warehouse: Warehouse, provider: str, url: str, tmp_path: Path, batch: int
) -> TriggerSummary:
    return crash_worker.push(
        crash_worker.settings_for(warehouse.value, warehouse.state, warehouse.password),
        crash_worker.build(provider, url, tmp_path / "outbox"),
        as_of=AS_OF.isoformat(),
        run_id="rerun",
        batch_size=batch,
    )


def _ledger(warehouse: Warehouse) -> dict[str, str]:
    with warehouse.connect() as con:
        return dict(con.execute("select send_id, status from nudge.send_ledger").fetchall())


def _assert_invariants(warehouse: Warehouse, due: list[str], received: list[str]) -> dict[str, str]:
    statuses = _ledger(warehouse)
    assert set(statuses) == set(due), "a planned send was lost"
    assert set(statuses.values()) <= SETTLED, statuses
    assert len(received) == len(set(received)), "the server received a send_id twice"
    sent = {s for s, status in statuses.items() if status == "sent"}
    unknown = {s for s, status in statuses.items() if status == "unknown"}
    assert sent <= set(received), "marked sent but never sent"
    assert set(received) <= sent | unknown, "delivered but the ledger says it was not"
    with warehouse.connect() as con:
        assert ledger.duplicate_deliveries(con, trigger="abandoned_cart") == 0
        # Everything the journal held was settled or taken over by the rerun.
        assert journal(con).is_empty()
        listed = sorted(r[0] for r in ledger.unknown_sends(con))
    assert listed == sorted(unknown), "the operator's list is not the unknown set"
    return statuses


def _unknown(statuses: dict[str, str]) -> set[str]:
    return {s for s, status in statuses.items() if status == "unknown"}


def _kill_after(worker: subprocess.Popen[str], server: EspServer, requests: int) -> None:
    """SIGKILL the worker once the server has received ``requests`` requests."""
    deadline = time.monotonic() + 60
    while len(server.send_requests()) < requests:
        assert worker.poll() is None, worker.communicate()[1]
        assert time.monotonic() < deadline, "the worker never got going"
        time.sleep(0.002)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)


# -- at named failpoints ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failpoint", "in_doubt_at_most"),
    [
        ("after_plan", 0),  # nothing reached the provider
        ("after_handover:30", crash_worker.CONCURRENCY),  # journaled, about to go out
        ("after_send:30", crash_worker.CONCURRENCY),  # delivered, answer not journaled
        # Batch 2 answered and journaled, its settle rolled back, while batch 3 is on the wire.
        ("mid_settle:2", crash_worker.CONCURRENCY),
    ],
)
def test_a_killed_sendgrid_push_leaves_in_doubt_only_what_was_on_the_wire(
    tmp_path: Path, engine: Warehouse, failpoint: str, in_doubt_at_most: int
) -> None:
    warehouse, due = _prepare(tmp_path, 300, engine)
    with EspServer(api_key=crash_worker.API_KEY, default=Reply(delay=0.005)) as server:
        worker = _start(
            warehouse, "sendgrid", server.url, tmp_path, batch=100, failpoints=failpoint
        )
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGKILL, err
        received_before = set(server.received_send_ids())
        summary = _rerun(warehouse, "sendgrid", server.url, tmp_path, 100)
        received = server.received_send_ids()

    statuses = _assert_invariants(warehouse, due, received)
    unknown = _unknown(statuses)
    assert len(unknown) <= in_doubt_at_most
    assert summary.unknown == len(unknown)
    if failpoint.startswith("after_send"):
        # The request whose answer was lost is among them (with whatever other workers had
        # handed over at that instant); SendGrid has no key: not resent.
        assert unknown & received_before
    if failpoint.startswith("mid_settle"):
        # Batches 1 and 2 were delivered by the killed run (2 settled from its journal, not
        # resent); batch 3 was going out meanwhile: only its requests handed over are in doubt
        # (at most one per worker, checked above), whether or not they reached the server.
        assert len(received_before) >= 200
        assert set(statuses.values()) <= {"sent", "unknown"}


def test_a_push_killed_settling_several_batches_at_once_settles_them_from_its_journal(
    tmp_path: Path,
) -> None:
    # Answered batches are settled together (policy.settle_every): batches 1 and 2 of 50 are
    # delivered, journaled and settled in one transaction that the kill rolls back while batch
    # 3 is on the wire. The rerun settles both from the journal (not resent) and leaves in
    # doubt only batch 3's requests that were handed over.
    warehouse, due = _prepare(tmp_path, 300)
    with EspServer(api_key=crash_worker.API_KEY, default=Reply(delay=0.005)) as server:
        worker = _start(
            warehouse,
            "sendgrid",
            server.url,
            tmp_path,
            batch=50,
            settle_every=100,
            failpoints="mid_settle:1",
        )
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGKILL, err
        received_before = set(server.received_send_ids())
        # The killed settle left nothing in the ledger: every answer is in the journal.
        assert set(_ledger(warehouse).values()) == {"planned"}
        with warehouse.connect() as con:
            assert journal(con).filter(pl.col("event") == "answered").height >= 100
        summary = _rerun(warehouse, "sendgrid", server.url, tmp_path, 50)
        received = server.received_send_ids()

    statuses = _assert_invariants(warehouse, due, received)
    unknown = _unknown(statuses)
    assert len(unknown) <= crash_worker.CONCURRENCY
    assert summary.unknown == len(unknown)
    assert len(received_before) >= 100
    assert set(statuses.values()) <= {"sent", "unknown"}


# -- at random moments --------------------------------------------------------------------------


def _random_kill_points(count: int, upper: int) -> list[int]:
    return sorted(random.Random(SEED).sample(range(1, upper), count))


def _kill_at_random_and_rerun(
    tmp_path: Path,
    provider: str,
    kill_after: int,
    *,
    batch: int,
    delay: float,
    engine: Warehouse | None = None,
) -> tuple[dict[str, str], TriggerSummary]:
    """Push 300 sends through ``provider``, SIGKILL the push once the server has received
    ``kill_after`` requests, rerun it; check the invariants and return the ledger."""
    warehouse, due = _prepare(tmp_path, 300, engine)
    with EspServer(api_key=API_KEYS[provider], default=Reply(delay=delay)) as server:
        worker = _start(warehouse, provider, server.url, tmp_path, batch=batch)
        _kill_after(worker, server, kill_after)
        summary = _rerun(warehouse, provider, server.url, tmp_path, batch)
        received = server.received_send_ids()
    statuses = _assert_invariants(warehouse, due, received)
    assert sum(s == "sent" for s in statuses.values()) + len(_unknown(statuses)) == len(due)
    return statuses, summary


@pytest.mark.parametrize("kill_after", _random_kill_points(4, 290))
def test_a_sendgrid_push_killed_at_a_random_moment_leaves_at_most_max_concurrency_unknown(
    tmp_path: Path, engine: Warehouse, kill_after: int
) -> None:
    statuses, summary = _kill_at_random_and_rerun(
        tmp_path, "sendgrid", kill_after, batch=100, delay=0.01, engine=engine
    )
    # SendGrid carries one message per request, and no key: at most one per worker in doubt.
    assert len(_unknown(statuses)) <= crash_worker.CONCURRENCY, kill_after
    assert summary.sent > 0  # the rerun finished what the killed run left


@pytest.mark.parametrize("kill_after", _random_kill_points(2, 5))
def test_a_postmark_push_killed_at_a_random_moment_leaves_at_most_one_request_unknown(
    tmp_path: Path, engine: Warehouse, kill_after: int
) -> None:
    statuses, _ = _kill_at_random_and_rerun(
        tmp_path, "postmark", kill_after, batch=50, delay=0.05, engine=engine
    )
    # A batch request without a key: at most the messages of the one request on the wire.
    assert len(_unknown(statuses)) <= 50


@pytest.mark.parametrize("kill_after", _random_kill_points(2, 3))
def test_a_resend_push_killed_at_a_random_moment_is_finished_with_nothing_unknown(
    tmp_path: Path, engine: Warehouse, kill_after: int
) -> None:
    warehouse, due = _prepare(tmp_path, 300, engine)
    with EspServer(api_key=crash_worker.RESEND_KEY, default=Reply(delay=0.05)) as server:
        worker = _start(warehouse, "resend", server.url, tmp_path, batch=100)
        _kill_after(worker, server, kill_after)
        summary = _rerun(warehouse, "resend", server.url, tmp_path, 100)
        assert server.duplicate_deliveries() == {}
        assert server.accepted_send_ids() == set(due)
    statuses = _ledger(warehouse)
    assert set(statuses) == set(due) and set(statuses.values()) == {"sent"}
    assert summary.unknown == 0


@pytest.mark.parametrize("failpoint", ["after_send:1", "mid_settle:1"])
def test_a_killed_resend_request_is_resent_under_its_key_and_delivered_once(
    tmp_path: Path, engine: Warehouse, failpoint: str
) -> None:
    warehouse, due = _prepare(tmp_path, 30, engine)
    with EspServer(api_key=crash_worker.RESEND_KEY) as server:
        worker = _start(warehouse, "resend", server.url, tmp_path, batch=10, failpoints=failpoint)
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGKILL, err
        keys_before = {r.idempotency_key for r in server.send_requests()}
        first_batch = server.send_requests()[0].idempotency_key
        summary = _rerun(warehouse, "resend", server.url, tmp_path, 10)
        replays = [r for r in server.send_requests() if r.replayed]
        if failpoint.startswith("after_send"):
            # The answer was lost: the request went out again under its key and the server
            # replayed its first answer instead of delivering again.
            assert replays and {r.idempotency_key for r in replays} <= keys_before
        else:
            # Killed settling the first batch, whose answer was journaled: it is not sent
            # again. The second batch goes out while the first settles, so it may have been
            # on the wire, its answer not yet journaled: then it is resent under its key and
            # replayed, as above (whether it was is a matter of timing).
            assert first_batch not in {r.idempotency_key for r in replays}
            assert {r.idempotency_key for r in replays} <= keys_before
        assert server.duplicate_deliveries() == {}
        assert server.accepted_send_ids() == set(due)
    statuses = _ledger(warehouse)
    assert set(statuses) == set(due) and set(statuses.values()) == {"sent"}
    assert summary.unknown == 0


@pytest.mark.parametrize("failpoint", ["after_plan", "mid_settle:2"])
def test_a_killed_outbox_push_is_finished_by_the_rerun(tmp_path: Path, failpoint: str) -> None:
    warehouse, due = _prepare(tmp_path, 30)
    worker = _start(warehouse, "outbox", "", tmp_path, batch=10, failpoints=failpoint)
    worker.communicate(timeout=120)
    assert worker.returncode == -signal.SIGKILL
    summary = _rerun(warehouse, "outbox", "", tmp_path, 10)
    statuses = _ledger(warehouse)
    assert set(statuses) == set(due) and set(statuses.values()) == {"sent"}
    assert summary.unknown == 0
    # Rewriting a message is harmless: one file per send.
    assert {p.stem for p in (tmp_path / "outbox").glob("*/*.eml")} == set(due)


def _received_once_quiet(server: EspServer) -> list[str]:
    """What the server received, once requests a killed worker left on the wire have landed."""
    seen = -1
    while len(server.requests) != seen:
        seen = len(server.requests)
        time.sleep(0.3)
    return server.received_send_ids()


def _pg_pair(tmp_path: Path, server: PostgresServer) -> tuple[Warehouse, Warehouse]:
    """One PostgreSQL database seen from two journal folders (two machines, say)."""
    database = server.new_database("journal_" + os.urandom(6).hex())
    url = f"postgresql://{database.user}@{database.host}:{database.port}/{database.dbname}"
    return (
        Warehouse(url, tmp_path / "here", database),
        Warehouse(url, tmp_path / "elsewhere", database),
    )


def _journal_folder(warehouse: Warehouse) -> Path:
    database = warehouse.server
    assert database is not None
    name = f"postgres-{database.host}-{database.port}-{database.dbname}.handovers"
    return warehouse.state / name


def test_on_postgresql_a_run_elsewhere_refuses_what_a_dead_push_left_in_its_journal(
    tmp_path: Path, postgres_cluster: PostgresServer
) -> None:
    """The journal is a local folder, the PostgreSQL ledger is shared: a run on another machine
    (here: another state folder) cannot tell a dead push's handed-over sends from unsent ones,
    so it stops and names the journal instead of sending them again."""
    here, elsewhere = _pg_pair(tmp_path, postgres_cluster)
    warehouse, due = _prepare(tmp_path, 60, here)
    with EspServer(api_key=crash_worker.API_KEY) as server:
        worker = _start(
            warehouse, "sendgrid", server.url, tmp_path, batch=20, failpoints="after_send:5"
        )
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGKILL, err
        received_before = _received_once_quiet(server)
        left = _ledger(here)
        with pytest.raises(JournalElsewhereError, match=r"journal at \S+:\S+/here/"):
            _rerun(elsewhere, "sendgrid", server.url, tmp_path, 20)
        # Nothing went out and nothing changed.
        assert server.received_send_ids() == received_before
        assert _ledger(here) == left
        # Where the journal is, the rerun finishes the push as after any crash.
        _rerun(here, "sendgrid", server.url, tmp_path, 20)
        _assert_invariants(here, due, server.received_send_ids())
        # Nothing of the trigger is on the wire now: a run elsewhere goes on.
        assert _rerun(elsewhere, "sendgrid", server.url, tmp_path, 20).outcome != "failed"
    with here.connect() as con:
        assert con.execute("select count(*) from nudge.open_journals").fetchall() == [(0,)]
        # The journal is its folder, not the machine's name: mounted in a new container
        # (another host name), the same folder is the same journal.
        identity = guards.journal_identity(_journal_folder(here))
        con.execute(
            "insert into nudge.open_journals values ('abandoned_cart', ?, now())",
            [identity.replace(" ", " old-pod:", 1)],
        )
        guards.check_journal(con, "abandoned_cart", _journal_folder(here))
        with pytest.raises(JournalElsewhereError, match="old-pod"):
            guards.check_journal(con, "abandoned_cart", _journal_folder(elsewhere))
        # Another trigger's sends are not held up by it.
        guards.check_journal(con, "welcome", _journal_folder(elsewhere))


def test_on_postgresql_a_lost_journal_makes_its_unfinished_sends_unknown_not_resent(
    tmp_path: Path, postgres_cluster: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, elsewhere = _pg_pair(tmp_path, postgres_cluster)
    warehouse, due = _prepare(tmp_path, 60, here)
    with EspServer(api_key=crash_worker.API_KEY) as server:
        worker = _start(
            warehouse, "sendgrid", server.url, tmp_path, batch=20, failpoints="after_send:5"
        )
        worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGKILL
        received_before = _received_once_quiet(server)
        unfinished = {s for s, status in _ledger(here).items() if status == "planned"}
        assert unfinished, "the kill left nothing unfinished: the test proves nothing"
        shutil.rmtree(here.state)  # the machine is gone, and its disk with it
        monkeypatch.setenv("NUDGE_WAREHOUSE", here.value)
        monkeypatch.setenv(POSTGRES_PASSWORD_VAR, here.password)
        assert main(["resolve-unknown", "--journal-lost", "abandoned_cart"]) == 0
        statuses = _ledger(here)
        assert {s for s, status in statuses.items() if status == "unknown"} == unfinished
        # The run elsewhere goes on: it resends none of them (they may have been delivered)
        # and leaves them for the operator.
        summary = _rerun(elsewhere, "sendgrid", server.url, tmp_path, 20)
        assert summary.outcome != "failed"
        assert server.received_send_ids() == received_before
        assert _ledger(here) == statuses
    assert set(received_before) <= set(statuses) == set(due)
