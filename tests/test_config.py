"""Settings from NUDGE_* variables and the Dagster definitions built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_project.config import DEFAULT_WAREHOUSE, ConfigError, Settings
from dagster_project.resources import LateTickError, TickResource, parse_as_of


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.warehouse == DEFAULT_WAREHOUSE.resolve()
    assert settings.esp == "outbox" and settings.esp_api_key is None


def test_environment_overrides(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "NUDGE_WAREHOUSE": str(tmp_path / "w.duckdb"),
            "NUDGE_ESP": "SendGrid",
            "NUDGE_ESP_BASE_URL": "http://127.0.0.1:9",
            "NUDGE_ESP_API_KEY": "SG.k",
            "NUDGE_FROM_EMAIL": "Shop <s@example.com>",
        }
    )
    assert settings.warehouse == tmp_path / "w.duckdb"
    assert (settings.esp, settings.esp_base_url, settings.esp_api_key) == (
        "sendgrid",
        "http://127.0.0.1:9",
        "SG.k",
    )


def test_a_warehouse_named_like_a_nudge_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rename the file"):
        Settings.from_env({"NUDGE_WAREHOUSE": str(tmp_path / "nudge.duckdb")})


def test_as_of_parsing_assumes_utc_and_rejects_garbage() -> None:
    assert parse_as_of("2026-06-01T12:00:00").isoformat() == "2026-06-01T12:00:00+00:00"
    assert parse_as_of("2026-06-01T14:00:00+02:00").isoformat() == "2026-06-01T12:00:00+00:00"
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_as_of("yesterday")


def test_definitions_list_the_assets_and_the_hourly_schedule() -> None:
    from dagster_project.definitions import build_definitions

    defs = build_definitions(Settings.from_env({}))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"nudge/send_abandoned_cart", "nudge/send_birthday", "nudge/send_inactivity"} <= keys
    assert "audience/abandoned_cart_eligibility" in keys
    schedule = defs.resolve_schedule_def("hourly_tick")
    assert schedule.cron_schedule == "0 * * * *"


def test_the_schedule_pins_as_of_to_the_scheduled_time() -> None:
    from datetime import UTC, datetime

    from dagster import build_schedule_context

    from dagster_project.schedules import hourly_tick

    context = build_schedule_context(scheduled_execution_time=datetime(2026, 6, 1, 13, tzinfo=UTC))
    request = hourly_tick(context)
    assert request.run_config == {
        "resources": {"tick": {"config": {"as_of": "2026-06-01T13:00:00+00:00"}}}
    }


def test_sending_for_a_stale_as_of_is_refused_unless_allowed() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 6, 2, 12, tzinfo=UTC)
    TickResource().check_not_late(now - timedelta(hours=5), now=now)
    with pytest.raises(LateTickError, match="ignore consent and orders since"):
        TickResource().check_not_late(now - timedelta(hours=7), now=now)
    TickResource(allow_late=True).check_not_late(now - timedelta(days=30), now=now)
    TickResource(max_lag_hours=48).check_not_late(now - timedelta(hours=7), now=now)


def test_the_api_key_is_not_in_reprs() -> None:
    from dagster_project.resources import EspResource

    settings = Settings.from_env({"NUDGE_ESP": "sendgrid", "NUDGE_ESP_API_KEY": "SG.repr-secret"})
    resource = EspResource(
        provider="sendgrid",
        base_url="http://x",
        api_key="SG.repr-secret",
        outbox_dir=".",
        from_email="a@b.co",
    )
    assert "SG.repr-secret" not in repr(settings)
    assert "SG.repr-secret" not in repr(resource)
