"""Paths and environment settings: the one place nudge reads ``NUDGE_*`` variables.

Secrets (the ESP API key) are read here only to be handed to a provider; they are never put in
logs, Dagster metadata, errors or the ledger. In Dagster they arrive through ``EnvVar`` on the
ESP resource instead (see ``resources.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt"
MODELS_DIR = PROJECT_ROOT / "models"
SQL_DIR = PROJECT_ROOT / "sql"
TEMPLATES_DIR = PROJECT_ROOT / "templates"
STATE_DIR = PROJECT_ROOT / ".nudge"

DEFAULT_WAREHOUSE = STATE_DIR / "warehouse.duckdb"
DEFAULT_OUTBOX_DIR = STATE_DIR / "outbox"
DEFAULT_ESP = "outbox"
DEFAULT_FROM_EMAIL = "hello@nudge.example"

# DuckDB names a file's catalog after the file, so `nudge.duckdb` would make `nudge.send_ledger`
# ambiguous between the catalog and the schema. Refuse those names with a clear message.
RESERVED_WAREHOUSE_STEMS = frozenset(
    {"nudge", "raw", "staging", "intermediate", "triggers", "audience", "main"}
)


class ConfigError(ValueError):
    """A NUDGE_* setting is invalid; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    """Runtime settings, resolved from the environment with documented defaults."""

    warehouse: Path
    esp: str
    # None: the provider's public API (each adapter knows its own).
    esp_base_url: str | None
    esp_api_key: str | None = field(repr=False)
    outbox_dir: Path
    from_email: str
    # Guard and retry settings for SendPolicyResource (only the ones set in the environment).
    send_policy: dict[str, Any] = field(default_factory=dict)
    # Non-secret provider options (see ESP_OPTION_VARS), only the ones set.
    esp_options: dict[str, str] = field(default_factory=dict)
    smtp_password: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        esp = env.get("NUDGE_ESP", DEFAULT_ESP).strip().lower()
        warehouse = Path(env.get("NUDGE_WAREHOUSE") or DEFAULT_WAREHOUSE).resolve()
        if warehouse.stem.lower() in RESERVED_WAREHOUSE_STEMS:
            raise ConfigError(
                f"NUDGE_WAREHOUSE={warehouse}: DuckDB would name the catalog {warehouse.stem!r}, "
                f"which clashes with nudge's schema of that name; rename the file "
                f"(e.g. warehouse.duckdb)"
            )
        return cls(
            send_policy=_send_policy(env),
            warehouse=warehouse,
            esp=esp,
            esp_base_url=env.get("NUDGE_ESP_BASE_URL") or None,
            esp_api_key=env.get("NUDGE_ESP_API_KEY") or None,
            esp_options={
                name: env[var].strip() for var, name in ESP_OPTION_VARS.items() if env.get(var)
            },
            smtp_password=env.get("NUDGE_SMTP_PASSWORD") or None,
            webhook_secret=env.get("NUDGE_WEBHOOK_SECRET") or None,
            outbox_dir=Path(env.get("NUDGE_OUTBOX_DIR") or DEFAULT_OUTBOX_DIR).resolve(),
            from_email=env.get("NUDGE_FROM_EMAIL") or DEFAULT_FROM_EMAIL,
        )


# Non-secret provider options: NUDGE_* variable -> option name read by build_provider.
ESP_OPTION_VARS: dict[str, str] = {
    "NUDGE_ESP_RATE_LIMIT": "requests_per_second",
    "NUDGE_SENDGRID_TEMPLATE_ID": "template_id",
    "NUDGE_POSTMARK_MESSAGE_STREAM": "message_stream",
    "NUDGE_SES_REGION": "region",
    "NUDGE_SES_CONFIGURATION_SET": "configuration_set",
    "NUDGE_SMTP_HOST": "smtp_host",
    "NUDGE_SMTP_PORT": "smtp_port",
    "NUDGE_SMTP_USERNAME": "smtp_username",
    "NUDGE_SMTP_STARTTLS": "smtp_starttls",
    "NUDGE_SMTP_SSL": "smtp_ssl",
    "NUDGE_WEBHOOK_URL": "webhook_url",
    "NUDGE_WEBHOOK_IDEMPOTENT": "webhook_idempotent",
}

# NUDGE_* variable -> (SendPolicyResource field, parser). Unset variables keep the defaults.
SEND_POLICY_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "NUDGE_MASS_SEND_MAX": ("mass_send_max", int),
    "NUDGE_MASS_SEND_MULTIPLE": ("mass_send_multiple", float),
    "NUDGE_MASS_SEND_MIN": ("mass_send_min", int),
    "NUDGE_FRESHNESS_MAX_HOURS": ("freshness_max_hours", float),
    "NUDGE_FAILURE_RATE_MAX": ("failure_rate_max", float),
    "NUDGE_RETRY_BASE_MINUTES": ("retry_base_minutes", int),
    "NUDGE_RETRY_MAX_BACKOFF_MINUTES": ("retry_max_backoff_minutes", int),
    "NUDGE_RETRY_MAX_AGE_HOURS": ("retry_max_age_hours", int),
    "NUDGE_FREQUENCY_CAP_DAY": ("frequency_cap_day", int),
    "NUDGE_FREQUENCY_CAP_WEEK": ("frequency_cap_week", int),
    "NUDGE_PAUSED_TRIGGERS": (
        "paused",
        lambda raw: sorted({t.strip() for t in raw.split(",") if t.strip()}),
    ),
}


def _send_policy(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, (name, parse) in SEND_POLICY_VARS.items():
        raw = (env.get(var) or "").strip()
        if not raw:
            continue
        try:
            value = parse(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a valid {parse.__name__}") from None
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(f"{var}={raw!r} must not be negative")
        values[name] = value
    return values
