"""Paths and environment settings: the one place nudge reads ``NUDGE_*`` variables.

Secrets (the ESP API key, the SMTP password, the webhook secret) are read here only to be
handed to a provider; they are never put in logs, Dagster metadata, errors or the ledger. In
Dagster they arrive through ``EnvVar`` on the ESP resource instead (``defs/resources.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .postgres import PostgresSettings
from .providers import ProviderSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt"
MODELS_DIR = PROJECT_ROOT / "models"
SQL_DIR = PROJECT_ROOT / "sql"
TEMPLATES_DIR = PROJECT_ROOT / "templates"
STATE_DIR = PROJECT_ROOT / ".nudge"

DEFAULT_WAREHOUSE = STATE_DIR / "warehouse.duckdb"
DEFAULT_OUTBOX_DIR = STATE_DIR / "outbox"
DEFAULT_DAGSTER_HOME = STATE_DIR / "dagster_home"
DEFAULT_ESP = "outbox"
DEFAULT_FROM_EMAIL = "hello@nudge.example"

# DuckDB names a file's catalog after the file, so `nudge.duckdb` would make `nudge.send_ledger`
# ambiguous between the catalog and the schema. Refuse those names with a clear message.
RESERVED_WAREHOUSE_STEMS = frozenset(
    {"nudge", "raw", "staging", "intermediate", "triggers", "audience", "main"}
)

# Non-secret provider options: NUDGE_* variable -> option name read by the provider builders.
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


class ConfigError(ValueError):
    """A NUDGE_* setting is invalid; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    """Runtime settings, resolved from the environment with documented defaults."""

    warehouse: Path
    provider: ProviderSettings = field(default_factory=ProviderSettings)
    from_email: str = DEFAULT_FROM_EMAIL
    # The send policy's knobs set in the environment, by name (policy.values_from_env).
    send_policy: dict[str, Any] = field(default_factory=dict)
    # Where Dagster keeps the runs of `nudge run` and `make dev` (DAGSTER_HOME).
    dagster_home: Path = DEFAULT_DAGSTER_HOME
    # nudge serve's landing store of consent changes (NUDGE_LANDING), beside the warehouse.
    landing: Path | None = None
    confirm_link_days: int = 7
    # Set when NUDGE_WAREHOUSE is a postgresql:// URL; ``warehouse`` is then only the name
    # beside which nudge keeps its local files for that database.
    postgres: PostgresSettings | None = None

    @property
    def landing_path(self) -> Path:
        """The landing store: NUDGE_LANDING, else ``<warehouse>.landing.sqlite``."""
        return self.landing or self.warehouse.with_name(self.warehouse.name + ".landing.sqlite")

    @property
    def warehouse_setting(self) -> str:
        """NUDGE_WAREHOUSE as dbt and child processes must see it: the file, or the URL."""
        return self.postgres.url if self.postgres is not None else str(self.warehouse)

    @property
    def esp(self) -> str:
        return self.provider.esp

    @property
    def outbox_dir(self) -> Path:
        return self.provider.outbox_dir

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        from .policy import values_from_env  # policy reads ConfigError from here

        env = os.environ if environ is None else environ
        postgres = postgres_from_url(
            env.get("NUDGE_WAREHOUSE") or "", env.get(POSTGRES_PASSWORD_VAR, "")
        )
        if postgres is not None:
            # What nudge keeps on this machine for the database (landing store, hand-over
            # journal) goes beside this name in the state folder, as beside a DuckDB file.
            warehouse = postgres.local_name.resolve()
        else:
            warehouse = Path(env.get("NUDGE_WAREHOUSE") or DEFAULT_WAREHOUSE).resolve()
        if postgres is None and warehouse.stem.lower() in RESERVED_WAREHOUSE_STEMS:
            raise ConfigError(
                f"NUDGE_WAREHOUSE={warehouse}: DuckDB would name the catalog {warehouse.stem!r}, "
                f"which clashes with nudge's schema of that name; rename the file "
                f"(e.g. warehouse.duckdb)"
            )
        return cls(
            warehouse=warehouse,
            postgres=postgres,
            provider=ProviderSettings(
                esp=env.get("NUDGE_ESP", DEFAULT_ESP).strip().lower(),
                base_url=env.get("NUDGE_ESP_BASE_URL") or None,
                api_key=env.get("NUDGE_ESP_API_KEY") or None,
                outbox_dir=Path(env.get("NUDGE_OUTBOX_DIR") or DEFAULT_OUTBOX_DIR).resolve(),
                options={
                    name: env[var].strip() for var, name in ESP_OPTION_VARS.items() if env.get(var)
                },
                smtp_password=env.get("NUDGE_SMTP_PASSWORD") or None,
                webhook_secret=env.get("NUDGE_WEBHOOK_SECRET") or None,
            ),
            from_email=env.get("NUDGE_FROM_EMAIL") or DEFAULT_FROM_EMAIL,
            send_policy=values_from_env(env),
            dagster_home=Path(env.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve(),
            landing=Path(env["NUDGE_LANDING"]).resolve() if env.get("NUDGE_LANDING") else None,
            confirm_link_days=_whole(env, "NUDGE_CONFIRM_LINK_DAYS", 7),
        )


# The PostgreSQL password: only from this variable, whose value dbt scrubs from its logs.
POSTGRES_PASSWORD_VAR = "DBT_ENV_SECRET_NUDGE_PG_PASSWORD"


def postgres_from_url(value: str, password: str = "") -> PostgresSettings | None:
    """``postgresql://user@host:port/dbname`` as a PostgreSQL warehouse; None for a DuckDB file.

    Any other URL is refused, as is a password in the URL (it would travel wherever the
    variable is shown). A URL would otherwise become a folder named after it
    (``postgresql:/user@host/db``) holding a new, empty DuckDB file. Messages name the scheme
    and the part that is wrong, never the URL: it may carry a password."""
    scheme, separator, _ = value.partition("://")
    if not separator or not scheme.replace("+", "").isalpha():
        return None
    if scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigError(
            f"NUDGE_WAREHOUSE is a {scheme}:// URL; nudge runs on a DuckDB file (its path) or "
            "on PostgreSQL (postgresql://user@host:port/dbname); see the README, 'Warehouses: "
            "what runs where'."
        )
    try:
        url = urlsplit(value)
        port = url.port or 5432
    except ValueError:
        raise ConfigError(f"NUDGE_WAREHOUSE is not a valid {scheme}:// URL") from None
    if url.password is not None:
        raise ConfigError(
            f"NUDGE_WAREHOUSE has a password in its {scheme}:// URL: leave it out and set "
            f"{POSTGRES_PASSWORD_VAR} instead (dbt scrubs that variable from its logs)."
        )
    dbname = url.path.lstrip("/")
    if not url.hostname or not url.username or not dbname or "/" in dbname:
        raise ConfigError(
            f"NUDGE_WAREHOUSE must read {scheme}://user@host:port/dbname (user, host and "
            "database are required)"
        )
    if url.query or url.fragment:
        raise ConfigError(
            f"NUDGE_WAREHOUSE: options after '?' in a {scheme}:// URL are not read; set "
            "libpq's PG* variables (PGSSLMODE, ...) instead"
        )
    return PostgresSettings(
        host=url.hostname,
        port=port,
        user=unquote(url.username),
        dbname=unquote(dbname),
        password=password,
        state_dir=STATE_DIR,
    )


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    value = (env.get(name) or str(default)).strip()
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name} must be a whole number above 0, got {value!r}")
    return int(value)
