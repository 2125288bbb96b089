"""The Dagster definitions, as a snapshot: asset keys, checks, dependencies, job and schedule.

A change to what Dagster loads (a new model, a renamed check, a lost dependency of a send
asset on the eligibility tables it must wait for) shows up here as a diff to review.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version as installed_version

import pytest
from dagster import AssetKey, Definitions

from dagster_project.config import PROJECT_ROOT, Settings
from dagster_project.definitions import build_definitions
from dagster_project.tick import prepare_dagster_home

SEND_CHECKS = {"mass_send_guard", "no_duplicate_deliveries", "failure_rate"}
ABSENCE_TRIGGERS = {"abandoned_cart", "browse_abandonment", "re_engagement", "win_back"}
TRANSACTIONAL = {"confirm_subscription", "order_confirmation", "shipping_notification"}
# Trigger -> the higher-priority marketing triggers whose tables it waits for (cap slots).
PRIORITIES = {
    "abandoned_cart": 80,
    "birthday": 70,
    "welcome": 60,
    "signup_anniversary": 50,
    "browse_abandonment": 40,
    "post_purchase_review": 30,
    "win_back": 20,
    "re_engagement": 10,
}


def _defs() -> Definitions:
    return build_definitions(Settings.from_env({}))


def test_the_asset_graph_is_the_dbt_project_plus_one_send_asset_per_trigger() -> None:
    graph = _defs().resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    models = {k for k in keys if not k.startswith(("nudge/", "raw/"))}
    assert {k.split("/")[0] for k in models} == {
        "staging",
        "intermediate",
        "triggers",
        "audience",
        "reporting",
    }
    # The dbt sources: the input contract, and the ledger the eligibility models read.
    assert {k for k in keys if k.startswith("raw/")} == {
        "raw/customers",
        "raw/events",
        "raw/subscriptions",
    }
    # ...and nudge's own: the ledger, the consent changes and the provider events (each drained
    # by an asset of nudge's own, upstream of staging), the erased addresses and their salt.
    assert {k for k in keys if k.startswith("nudge/")} == {
        "nudge/send_ledger",
        "nudge/consent_changes",
        "nudge/email_events",
        "nudge/erasures",
        "nudge/erasure_salt",
        *(f"nudge/send_{t}" for t in [*PRIORITIES, *TRANSACTIONAL]),
    }
    drain = graph.get(AssetKey(["nudge", "consent_changes"]))
    assert drain.is_materializable and drain.group_name == "consent"
    assert "staging/stg_nudge__consent_changes" in {k.to_user_string() for k in drain.child_keys}
    events = graph.get(AssetKey(["nudge", "email_events"]))
    assert events.is_materializable and events.group_name == "consent"
    assert "staging/stg_nudge__email_events" in {k.to_user_string() for k in events.child_keys}
    # Transactional: it takes nobody's frequency-cap slot and waits for no one, even with a
    # priority above every marketing trigger's (order_confirmation 100).
    for trigger in TRANSACTIONAL:
        node = graph.get(AssetKey(["nudge", f"send_{trigger}"]))
        assert {k.to_user_string() for k in node.parent_keys} == {
            f"audience/{trigger}_eligibility"
        }, trigger
    for trigger, priority in PRIORITIES.items():
        node = graph.get(AssetKey(["nudge", f"send_{trigger}"]))
        waits_for = {k.to_user_string() for k in node.parent_keys}
        higher = {t for t, p in PRIORITIES.items() if p > priority}
        assert waits_for == {f"audience/{t}_eligibility" for t in {trigger, *higher}}, trigger
        assert node.group_name == "sends"


def test_every_send_asset_has_its_checks() -> None:
    defs = _defs()
    checks: dict[str, set[str]] = {}
    for assets_def in defs.assets or []:
        for check_key in getattr(assets_def, "check_keys", ()):
            checks.setdefault(check_key.asset_key.to_user_string(), set()).add(check_key.name)
    for trigger in PRIORITIES:
        # Every trigger here is marketing: the deliverability guard can hold it.
        expected = (
            SEND_CHECKS
            | {"deliverability"}
            | ({"source_freshness"} if trigger in ABSENCE_TRIGGERS else set())
        )
        assert checks[f"nudge/send_{trigger}"] == expected, trigger
    # dbt's data tests are asset checks on the models.
    assert (
        "unique_abandoned_cart_eligibility_send_id" in checks["audience/abandoned_cart_eligibility"]
    )


def test_the_job_runs_every_asset_in_one_process_and_the_schedule_ticks_hourly() -> None:
    defs = _defs()
    job = defs.resolve_job_def("nudge_tick")
    assert job.executor_def.name == "in_process"
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} >= {
        f"nudge/send_{t}" for t in PRIORITIES
    }
    schedule = defs.resolve_schedule_def("hourly_tick")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 * * * *", "UTC")


def test_the_transactional_job_builds_only_what_transactional_mail_needs() -> None:
    defs = _defs()
    job = defs.resolve_job_def("nudge_transactional")
    assert job.executor_def.name == "in_process"
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {k for k in selected if k.startswith("nudge/send_")} == {
        f"nudge/send_{t}" for t in TRANSACTIONAL
    }
    # The landing drains first: a bounce or complaint reported a minute ago suppresses.
    assert {"nudge/consent_changes", "nudge/email_events"} <= selected
    assert {f"audience/{t}_eligibility" for t in TRANSACTIONAL} <= selected
    assert "intermediate/int_orders__itemized" in selected
    # No marketing table is rebuilt every 5 minutes, nor anything only marketing reads.
    for name in (*PRIORITIES, "int_customers__activity", "int_carts__summarized"):
        assert not any(
            k.endswith(f"/{name}") or k.endswith(f"/{name}_eligibility") for k in selected
        )
    assert not any(k.startswith("reporting/") for k in selected)
    schedule = defs.resolve_schedule_def("transactional_tick")
    assert schedule.job_name == "nudge_transactional"
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("5-55/5 * * * *", "UTC")


def test_the_transactional_schedule_runs_as_of_its_scheduled_minute_one_at_a_time() -> None:
    from dagster import DagsterRun, DagsterRunStatus, build_schedule_context, instance_for_test

    schedule = _defs().resolve_schedule_def("transactional_tick")
    at = datetime(2026, 6, 1, 12, 5, tzinfo=UTC)
    with instance_for_test() as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=at)
        (request,) = schedule.evaluate_tick(context).run_requests or []
        assert request.run_key == at.isoformat()
        assert request.run_config == {"resources": {"tick": {"config": {"as_of": at.isoformat()}}}}
        # A transactional run still going (behind a long hourly push): the next one skips, so
        # runs never pile up on the warehouse lock. Another job's run does not count.
        for job, run_id in (("nudge_tick", "h1"), ("nudge_transactional", "t1")):
            run = DagsterRun(job_name=job, run_id=run_id, status=DagsterRunStatus.STARTED)
            instance.add_run(run)
            result = schedule.evaluate_tick(
                build_schedule_context(instance=instance, scheduled_execution_time=at)
            )
            assert bool(result.run_requests) == (job == "nudge_tick"), job
        assert "t1 is still in progress" in (result.skip_message or "")


def test_importing_the_package_parses_nothing() -> None:
    """The manifest is read when Dagster loads the definitions, not on import."""
    code = (
        "import sys, subprocess\n"
        "calls = []\n"
        "real = subprocess.run\n"
        "def spy(args, *a, **k):\n"
        "    if 'dbt' in ' '.join(map(str, args)):\n"
        "        calls.append(args)\n"
        "    return real(args, *a, **k)\n"
        "subprocess.run = spy\n"
        "import dagster_project.definitions, dagster_project.cli, dagster_project.dispatch\n"
        "sys.exit(len(calls))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=False)
    assert result.returncode == 0, "importing nudge ran dbt"


def test_a_tick_does_not_import_the_svix_sdk() -> None:
    """Only `nudge serve` verifies Resend's signatures; importing Svix's SDK cost every command
    and tick about a tenth of its imports (the landing drain imports the Resend parser)."""
    code = (
        "import sys\n"
        "import dagster_project.definitions, dagster_project.cli, dagster_project.tick\n"
        "import dagster_project.webhooks.resend\n"
        "sys.exit('svix' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=False)
    assert result.returncode == 0, "importing the tick's modules imported svix"


def test_workspace_yaml_still_loads_the_code_location(tmp_path) -> None:
    dagster = [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"]
    env = {**os.environ, "DAGSTER_HOME": str(prepare_dagster_home(tmp_path / "home"))}
    result = subprocess.run(
        dagster, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validation successful for code location nudge" in result.stdout + result.stderr


def test_a_dbt_command_starts_dbt_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """dagster-dbt ran ``dbt --version`` before each dbt command (a second dbt start-up and a
    request to PyPI, 3 to 6 s of every tick) and loaded a dbt adapter into the tick's process
    (2.4 s) for metadata nudge never fetches. The resource reads the version of the dbt
    installed next to this interpreter instead, and loads no adapter."""
    import dagster_dbt.core.resource as dagster_dbt_resource

    started: list[object] = []
    monkeypatch.setattr(dagster_dbt_resource, "check_output", lambda *a, **k: started.append(a))
    resource = _defs().resources["dbt"]
    assert str(resource._cli_version) == installed_version("dbt-core")
    assert resource._initialize_dbt_core_adapter(["build"]) is None
    assert started == []
