"""Settings from NUDGE_* variables and the Dagster definitions built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_project.clock import parse_as_of
from dagster_project.config import (
    DEFAULT_DAGSTER_HOME,
    DEFAULT_WAREHOUSE,
    STATE_DIR,
    ConfigError,
    Settings,
)
from dagster_project.defs.resources import TickResource
from dagster_project.guards import LateTickError


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.warehouse == DEFAULT_WAREHOUSE.resolve()
    assert settings.esp == "outbox" and settings.provider.api_key is None
    assert settings.dagster_home == DEFAULT_DAGSTER_HOME.resolve()


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
    assert (settings.esp, settings.provider.base_url, settings.provider.api_key) == (
        "sendgrid",
        "http://127.0.0.1:9",
        "SG.k",
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://nudge:s3cret-pw@db.internal:5432/shop", "DBT_ENV_SECRET_NUDGE_PG_PASSWORD"),
        ("postgres://nudge:s3cret-pw@db.internal/shop", "leave it out"),
        ("postgresql://db.internal/shop?password=s3cret-pw", "user, host and database"),
        ("postgresql://nudge@db.internal/shop?sslmode=require&pw=s3cret-pw", "PGSSLMODE"),
        ("snowflake://nudge:s3cret-pw@account/db", "a DuckDB file (its path) or"),
    ],
)
def test_a_warehouse_url_is_refused_without_echoing_it(
    url: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found trying nudge as a new user would: `NUDGE_WAREHOUSE=postgresql://... nudge run` made
    a folder named `postgresql:` holding a new, empty DuckDB file, a lock and a landing store,
    then failed on the missing raw tables with the URL, password and all, in the message. Now
    a clear error before anything is created, and the URL is not repeated."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"NUDGE_WAREHOUSE": url})
    assert says in str(refused.value)
    assert "s3cret-pw" not in str(refused.value) and "db.internal" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_a_postgresql_url_without_password_is_the_warehouse_and_local_files_stay_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env(
        {
            "NUDGE_WAREHOUSE": "postgresql://shop_user@db.internal/shop",
            "DBT_ENV_SECRET_NUDGE_PG_PASSWORD": "s3cret-pw",
        }
    )
    assert settings.postgres is not None
    assert (settings.postgres.host, settings.postgres.port) == ("db.internal", 5432)
    assert (settings.postgres.user, settings.postgres.dbname) == ("shop_user", "shop")
    assert settings.postgres.password == "s3cret-pw"
    assert settings.warehouse_setting == "postgresql://shop_user@db.internal:5432/shop"
    # The landing store and the hand-over journal go to nudge's state folder, named after the
    # database; nothing is created by reading the settings.
    assert settings.landing_path.parent == STATE_DIR
    assert settings.landing_path.name == "postgres-db.internal-5432-shop.landing.sqlite"
    assert list(tmp_path.iterdir()) == []
    assert "s3cret-pw" not in repr(settings)


def test_a_warehouse_named_like_a_nudge_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rename the file"):
        Settings.from_env({"NUDGE_WAREHOUSE": str(tmp_path / "nudge.duckdb")})


def test_as_of_parsing_assumes_utc_and_rejects_garbage() -> None:
    assert parse_as_of("2026-06-01T12:00:00").isoformat() == "2026-06-01T12:00:00+00:00"
    assert parse_as_of("2026-06-01T14:00:00+02:00").isoformat() == "2026-06-01T12:00:00+00:00"
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_as_of("yesterday")


def test_the_schedule_pins_as_of_to_the_scheduled_time() -> None:
    from datetime import UTC, datetime

    from dagster import build_schedule_context

    from dagster_project.defs.schedules import hourly_tick

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
    from dagster_project.defs.resources import EspResource

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


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"NUDGE_ESP": "outbox"}, "outbox"),
        ({"NUDGE_ESP": "sendgrid", "NUDGE_ESP_API_KEY": "SG.k"}, "sendgrid"),
        ({"NUDGE_ESP": "postmark", "NUDGE_ESP_API_KEY": "pm-token"}, "postmark"),
        (
            {"NUDGE_ESP": "resend", "NUDGE_ESP_API_KEY": "re_k", "NUDGE_ESP_RATE_LIMIT": "5"},
            "resend",
        ),
        (
            {
                "NUDGE_ESP": "ses",
                "NUDGE_SES_REGION": "eu-west-1",
                "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                "AWS_SECRET_ACCESS_KEY": "secret-value",
            },
            "ses",
        ),
        ({"NUDGE_ESP": "smtp", "NUDGE_SMTP_HOST": "127.0.0.1", "NUDGE_SMTP_PORT": "2525"}, "smtp"),
        (
            {
                "NUDGE_ESP": "webhook",
                "NUDGE_WEBHOOK_URL": "http://127.0.0.1:9/hook",
                "NUDGE_WEBHOOK_SECRET": "whsec-0123456789abcdef",
            },
            "webhook",
        ),
    ],
)
def test_every_esp_is_built_from_the_environment(monkeypatch, tmp_path, env, expected) -> None:
    from dagster_project.providers import build_provider

    for key, value in env.items():
        monkeypatch.setenv(key, value)  # botocore reads AWS_* itself
    provider = build_provider(
        Settings.from_env({**env, "NUDGE_OUTBOX_DIR": str(tmp_path)}).provider
    )
    try:
        assert provider.name == expected
        assert provider.limits.max_batch >= 1
        for secret in ("SG.k", "pm-token", "re_k", "secret-value", "whsec-0123456789abcdef"):
            assert secret not in repr(provider)
        if expected == "resend":
            assert provider.limits.idempotent
    finally:
        provider.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NUDGE_ESP": "postmark"}, "NUDGE_ESP_API_KEY is not set"),
        ({"NUDGE_ESP": "smtp"}, "NUDGE_SMTP_HOST"),
        ({"NUDGE_ESP": "webhook", "NUDGE_WEBHOOK_URL": "http://x"}, "NUDGE_WEBHOOK_SECRET"),
        ({"NUDGE_ESP": "resend", "NUDGE_ESP_API_KEY": "k", "NUDGE_ESP_RATE_LIMIT": "x"}, "number"),
        ({"NUDGE_ESP": "mailchimp"}, "valid choices"),
    ],
)
def test_a_misconfigured_esp_fails_before_anything_is_sent(env, message) -> None:
    from dagster_project.providers import ProviderConfigError, build_provider

    with pytest.raises(ProviderConfigError, match=message):
        build_provider(Settings.from_env(env).provider)


def test_guard_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"NUDGE_MASS_SEND_MAX": "50", "NUDGE_FRESHNESS_MAX_HOURS": "6"})
    assert settings.send_policy == {"mass_send_max": 50, "freshness_max_hours": 6.0}
    with pytest.raises(ConfigError, match="NUDGE_MASS_SEND_MAX"):
        Settings.from_env({"NUDGE_MASS_SEND_MAX": "lots"})


def test_every_send_policy_knob_is_one_field_of_the_dagster_resource() -> None:
    from dagster_project.defs.resources import SendPolicyResource
    from dagster_project.policy import DispatchPolicy, knobs

    declared = {k.name: k for k in knobs()}
    fields = SendPolicyResource.model_fields
    assert set(fields) == set(declared)
    for name, knob in declared.items():
        assert fields[name].description == knob.doc
    # Run config and the environment set the same knobs, by the same names.
    resource = SendPolicyResource(mass_send_max=7, frequency_cap_day=2, paused=["welcome"])
    policy = resource.policy(batch_size=50)
    assert policy == DispatchPolicy.from_values(
        {"mass_send_max": 7, "frequency_cap_day": 2, "paused": ["welcome"]}, batch_size=50
    )
    assert (policy.guards.mass_send_max, policy.caps.day, policy.paused) == (
        7,
        2,
        frozenset({"welcome"}),
    )
    assert policy.retry.base_minutes == 15 and policy.batch_size == 50  # the rest: defaults


def test_send_policy_settings_come_from_the_environment_by_their_documented_names() -> None:
    from dagster_project.policy import knobs

    env = {k.env: "3" for k in knobs() if k.env and k.python_type != "frozenset[str]"}
    env["NUDGE_PAUSED_TRIGGERS"] = "welcome, birthday,"
    values = Settings.from_env(env).send_policy
    assert values["paused"] == ["birthday", "welcome"]
    assert values["retry_base_minutes"] == 3 and values["max_message_bytes"] == 3
    assert len(values) == len(env)
    with pytest.raises(ConfigError, match="NUDGE_FREQUENCY_CAP_DAY"):
        Settings.from_env({"NUDGE_FREQUENCY_CAP_DAY": "-1"})
