"""``nudge run`` as a newcomer and a scheduler start it: real processes, a real Dagster home.

* The first run on a new ``DAGSTER_HOME`` prints nudge's own output, no Dagster telemetry banner
  or instance warnings, and records the run where ``make dev`` will show it.
* Runs started at the same moment on a new home (a schedule tick and a manual run) take turns:
  every one exits 0, and every due email is delivered exactly once.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dagster_project import ledger
from dagster_project.config import DEFAULT_DAGSTER_HOME, STATE_DIR, Settings
from dagster_project.demo_data import generate_to_file
from dagster_project.tick import DAGSTER_YAML, dagster_instance
from dagster_project.warehouse import connection
from tests.support.esp_server import EspServer
from tests.support.processes import nudge

pytestmark = pytest.mark.dbt

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
API_KEY = "SG.tick-test-key"


@pytest.fixture(scope="module")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tick")
    warehouse = folder / "template.duckdb"
    generate_to_file(warehouse, customers=400, end=AS_OF)
    return warehouse


def _copy(template: Path, folder: Path) -> Path:
    target = folder / "warehouse.duckdb"
    target.write_bytes(template.read_bytes())
    return target


def _env(warehouse: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "DAGSTER_"))}
    env.update(
        NUDGE_WAREHOUSE=str(warehouse),
        NUDGE_OUTBOX_DIR=str(warehouse.parent / "outbox"),
        DAGSTER_HOME=str(home),
        **extra,
    )
    return env


def test_the_default_dagster_home_is_under_the_projects_state_folder() -> None:
    assert DEFAULT_DAGSTER_HOME.parent == STATE_DIR
    assert Settings.from_env({}).dagster_home == DEFAULT_DAGSTER_HOME.resolve()


def test_a_first_run_on_a_new_dagster_home_prints_nudges_output_only(
    demo_warehouse: Path, tmp_path: Path
) -> None:
    warehouse = _copy(demo_warehouse, tmp_path)
    home = tmp_path / "new_home"  # does not exist yet, as on a fresh clone
    run = nudge("run", "--as-of", AS_OF.isoformat(), "--allow-late", env=_env(warehouse, home))
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, out + err
    output = out + err
    for noise in ("Welcome to Dagster", "telemetry", "dagster.yaml", "Warning", "WARNING"):
        assert noise not in output, f"{noise!r} in:\n{output}"
    assert out.startswith(f"tick as_of {AS_OF.isoformat()}")
    assert (home / "dagster.yaml").read_text() == DAGSTER_YAML
    # The run is in the home `make dev` reads.
    with dagster_instance(home) as instance:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == ["nudge_tick"]
        assert runs[0].run_id in out


def test_runs_started_together_on_a_new_dagster_home_take_turns_and_send_once(
    demo_warehouse: Path, tmp_path: Path
) -> None:
    warehouse = _copy(demo_warehouse, tmp_path)
    home = tmp_path / "new_home"
    with EspServer(api_key=API_KEY) as server:
        env = _env(
            warehouse,
            home,
            NUDGE_ESP="sendgrid",
            NUDGE_ESP_BASE_URL=server.url,
            NUDGE_ESP_API_KEY=API_KEY,
            NUDGE_LINK_SECRET="tick-link-secret-" + "k" * 32,
            NUDGE_PUBLIC_URL="https://nudge.shop.example",
        )
        runs = [
            nudge("run", "--as-of", AS_OF.isoformat(), "--allow-late", "--json", env=env)
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=900) for run in runs]
        received = server.received_send_ids()
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out[-2000:] + err[-4000:]
    assert received, "the tick sent nothing: the test proves nothing"
    assert len(received) == len(set(received)), "an email was delivered twice"
    with connection(warehouse) as con:
        sent = {
            r[0]
            for r in con.execute(
                "select send_id from nudge.send_ledger where status = 'sent'"
            ).fetchall()
        }
        assert ledger.duplicate_deliveries(con, trigger="abandoned_cart") == 0
    assert sent == set(received)
    with dagster_instance(home) as instance:
        assert len(instance.get_runs()) == 2


def test_an_in_process_tick_ignores_what_an_earlier_instance_left_in_dagsters_context(
    demo_warehouse: Path, tmp_path: Path
) -> None:
    """``nudge demo``, replays and the tests run many ticks in one process. An instance opened
    elsewhere in it can leave its definitions-state storage in Dagster's context; once that
    instance is collected, loading the definitions read it and failed ("Attempted to resolve
    undefined DagsterInstance weakref": seven tests of one run errored this way)."""
    import gc

    from dagster import DagsterInstance
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    from dagster_project.providers import ProviderSettings
    from dagster_project.tick import prepare_dagster_home, run_tick

    old_home = tmp_path / "old_home"
    prepare_dagster_home(old_home)
    earlier = DagsterInstance.from_config(str(old_home))
    stale = earlier.defs_state_storage
    assert stale is not None
    earlier.dispose()
    del earlier
    gc.collect()
    settings = Settings(
        warehouse=_copy(demo_warehouse, tmp_path),
        provider=ProviderSettings(esp="outbox", outbox_dir=tmp_path / "outbox"),
        from_email="Shop <shop@example.com>",
        dagster_home=tmp_path / "home",
    )
    with set_defs_state_storage(stale):
        outcome = run_tick(AS_OF.isoformat(), settings=settings, allow_late=True)
    assert outcome.success, outcome.error
    assert sum(t["sent"] for t in outcome.triggers) > 0


def test_nudge_run_full_refresh_rebuilds_the_incremental_models_in_full(
    demo_warehouse: Path, tmp_path: Path
) -> None:
    """An event delivered later than the late-arrival window is not in the incremental models
    (tests/test_incremental_models.py); ``nudge run --full-refresh`` rebuilds them from the
    whole history and picks it up.

    The warehouse starts as an earlier release left it: the event summaries as plain tables,
    without the incremental bookkeeping. The first tick rebuilds them in full (it failed
    before, on a missing column, and no transactional email went out)."""
    warehouse = _copy(demo_warehouse, tmp_path)
    with connection(warehouse) as con:
        con.execute("create schema intermediate")
        for table, key in (
            ("int_orders__itemized", "order_id"),
            ("int_carts__summarized", "cart_id"),
        ):
            con.execute(f"create table intermediate.{table} as select 'x' as {key}")
    env = _env(warehouse, tmp_path / "home")
    first = nudge("run", "--transactional", "--as-of", AS_OF.isoformat(), "--allow-late", env=env)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    later = AS_OF + timedelta(hours=1)
    with connection(warehouse) as con:
        customer_id = con.execute("select min(customer_id) from raw.customers").fetchone()
        assert customer_id is not None
        con.execute(
            "insert into raw.events values ('evt-too-late', ?, 'order_completed', ?, ?)",
            [
                customer_id[0],
                AS_OF - timedelta(days=10),
                json.dumps({"order_id": "ord-too-late", "revenue": 42, "products": []}),
            ],
        )
    refresh = nudge(
        "run",
        "--transactional",
        "--full-refresh",
        "--as-of",
        later.isoformat(),
        "--allow-late",
        env=env,
    )
    out, err = refresh.communicate(timeout=600)
    assert refresh.returncode == 0, out + err
    with connection(warehouse) as con:
        orders = con.execute(
            "select count(*) filter (where order_id = 'ord-too-late'), "
            "count(distinct computed_as_of), min(computed_as_of) "
            "from intermediate.int_orders__itemized"
        ).fetchone()
    # Every order recomputed at the refresh's instant, the late one included.
    assert orders == (1, 1, later)
