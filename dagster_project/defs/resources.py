"""Dagster resources: the warehouse, the ESP, and the tick's clock.

Each is a ``ConfigurableResource`` so tests and run config swap values instead of patching.
The ESP API key only ever arrives through ``EnvVar("NUDGE_ESP_API_KEY")``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from dagster import ConfigurableResource, EnvVar, InitResourceContext
from pydantic import Field

from .config import Settings
from .dispatch import DispatchPolicy
from .guards import GuardPolicy
from .ledger import FrequencyCaps, RetryPolicy
from .providers import Provider, build_provider
from .warehouse import connect, warehouse_lock


class WarehouseResource(ConfigurableResource):
    """The DuckDB file nudge reads and writes, behind the cross-process warehouse lock."""

    path: str = Field(description="DuckDB file (NUDGE_WAREHOUSE).")
    lock_timeout_seconds: float = Field(
        default=1800.0, description="How long a step waits for another run to release the file."
    )

    @property
    def file(self) -> Path:
        return Path(self.path).resolve()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with warehouse_lock(self.file, timeout=self.lock_timeout_seconds):
            yield

    @contextlib.contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An open connection; call inside ``locked()``."""
        con = connect(self.file)
        try:
            yield con
        finally:
            con.close()


class EspResource(ConfigurableResource):
    """Which email provider to push to, and how hard to try."""

    provider: str = Field(
        default="outbox",
        description="outbox | sendgrid | postmark | resend | ses | smtp | webhook (NUDGE_ESP).",
    )
    base_url: str | None = Field(
        default=None, description="Provider API base URL (NUDGE_ESP_BASE_URL); empty: public."
    )
    api_key: str | None = Field(
        default=None, description="From EnvVar NUDGE_ESP_API_KEY only.", repr=False
    )
    smtp_password: str | None = Field(
        default=None, description="From EnvVar NUDGE_SMTP_PASSWORD only.", repr=False
    )
    webhook_secret: str | None = Field(
        default=None, description="From EnvVar NUDGE_WEBHOOK_SECRET only.", repr=False
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Non-secret provider options from NUDGE_* variables (see the README).",
    )
    outbox_dir: str = Field(description="Folder of the outbox provider (NUDGE_OUTBOX_DIR).")
    from_email: str = Field(description="Sender address (NUDGE_FROM_EMAIL).")
    timeout_seconds: float = 10.0
    max_concurrency: int = 8
    max_attempts: int = 5
    batch_size: int = Field(
        default=100,
        description="Sends handed to the provider and settled in the ledger per batch; a crash "
        "mid-batch leaves at most this many in doubt.",
    )

    def build(self) -> Provider:
        settings = Settings(
            warehouse=Path("."),
            esp=self.provider,
            esp_base_url=self.base_url,
            esp_api_key=self.api_key,
            outbox_dir=Path(self.outbox_dir),
            from_email=self.from_email,
            esp_options=dict(self.options),
            smtp_password=self.smtp_password,
            webhook_secret=self.webhook_secret,
        )
        return build_provider(
            settings,
            timeout=self.timeout_seconds,
            max_concurrency=self.max_concurrency,
            max_attempts=self.max_attempts,
        )


class SendPolicyResource(ConfigurableResource):
    """Guards and retries of the push (NUDGE_MASS_SEND_*, NUDGE_FRESHNESS_MAX_HOURS, ...)."""

    mass_send_max: int = Field(
        default=GuardPolicy.mass_send_max,
        description="Hold a trigger whose tick plans more new sends than this.",
    )
    mass_send_multiple: float = Field(
        default=GuardPolicy.mass_send_multiple,
        description="...or more than this multiple of the median of its recent busy ticks.",
    )
    mass_send_min: int = Field(
        default=GuardPolicy.mass_send_min,
        description="The multiple rule ignores ticks with fewer new sends than this.",
    )
    mass_send_history_ticks: int = Field(default=GuardPolicy.mass_send_history_ticks)
    freshness_max_hours: float = Field(
        default=GuardPolicy.freshness_max_hours,
        description="Hold absence triggers when the newest event is older than this.",
    )
    failure_rate_max: float = Field(
        default=GuardPolicy.failure_rate_max,
        description="The failure_rate asset check fails above this share of attempts.",
    )
    approve: list[str] = Field(
        default_factory=list,
        description="Triggers whose guard hold is released for this run (nudge run --approve).",
    )
    retry_base_minutes: int = Field(default=RetryPolicy.base_minutes)
    retry_max_backoff_minutes: int = Field(default=RetryPolicy.max_backoff_minutes)
    retry_max_age_hours: int = Field(default=RetryPolicy.max_age_hours)
    frequency_cap_day: int = Field(
        default=FrequencyCaps.day,
        description="At most this many marketing emails per customer per 24 h (all triggers).",
    )
    frequency_cap_week: int = Field(
        default=FrequencyCaps.week,
        description="At most this many marketing emails per customer per 7 days.",
    )
    paused: list[str] = Field(
        default_factory=list,
        description="Triggers switched off: nothing is planned, resumed or sent for them.",
    )

    def policy(self, batch_size: int) -> DispatchPolicy:
        return DispatchPolicy(
            batch_size=batch_size,
            caps=FrequencyCaps(day=self.frequency_cap_day, week=self.frequency_cap_week),
            paused=frozenset(self.paused),
            retry=RetryPolicy(
                base_minutes=self.retry_base_minutes,
                max_backoff_minutes=self.retry_max_backoff_minutes,
                max_age_hours=self.retry_max_age_hours,
            ),
            guards=GuardPolicy(
                mass_send_max=self.mass_send_max,
                mass_send_multiple=self.mass_send_multiple,
                mass_send_min=self.mass_send_min,
                mass_send_history_ticks=self.mass_send_history_ticks,
                freshness_max_hours=self.freshness_max_hours,
                failure_rate_max=self.failure_rate_max,
                approved=frozenset(self.approve),
            ),
        )


class LateTickError(RuntimeError):
    """A send step was asked to send for an instant too far in the past."""


class TickResource(ConfigurableResource):
    """The tick's instant. Schedules set it to the scheduled time; manual runs leave it empty."""

    as_of: str | None = Field(
        default=None, description="ISO-8601 instant of the tick; empty means the run's start."
    )
    max_lag_hours: float = Field(
        default=6.0,
        description="Send steps refuse an as_of older than this (re-executing an old run).",
    )
    allow_late: bool = Field(
        default=False,
        description="Send for an old as_of anyway (simulations, deliberate catch-up).",
    )

    def check_not_late(self, as_of: datetime, now: datetime | None = None) -> None:
        """Refuse to send for a stale instant unless explicitly allowed.

        Re-executing yesterday's failed run keeps yesterday's as_of: its dbt build would ignore
        every unsubscribe and order since, and mail people who have since bought or opted out.
        """
        now = now or datetime.now(UTC)
        lag_hours = (now - as_of).total_seconds() / 3600
        if lag_hours > self.max_lag_hours and not self.allow_late:
            raise LateTickError(
                f"as_of {as_of.isoformat()} is {lag_hours:.1f} h old "
                f"(limit {self.max_lag_hours:g} h): sending now would ignore consent and orders "
                "since then. Run a fresh tick, or set resources.tick.config.allow_late "
                "(nudge run --allow-late) to send anyway."
            )

    def consent_cutoff(self, as_of: datetime, now: datetime | None = None) -> datetime:
        """Consent changes up to this instant are honoured at push time.

        A live tick honours every unsubscribe recorded until the moment it sends. A late tick
        run with ``allow_late`` (a simulation, a backtest) is replayed as of its instant:
        consent recorded after it is the future there.
        """
        if self.allow_late:
            return as_of
        return max(as_of, now or datetime.now(UTC))

    def resolve(self, context: InitResourceContext | object) -> datetime:
        """``as_of`` from config, else the run's creation time, so every step agrees."""
        if self.as_of:
            return parse_as_of(self.as_of)
        instance = getattr(context, "instance", None)
        run_id = getattr(context, "run_id", None)
        record = instance.get_run_record_by_id(run_id) if instance and run_id else None
        created = record.create_timestamp if record else datetime.now(UTC)
        return created.astimezone(UTC).replace(microsecond=0)


def parse_as_of(value: str) -> datetime:
    """Parse an ISO-8601 instant; a value without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"as_of must be an ISO-8601 instant, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def resources_from_settings(settings: Settings) -> dict[str, ConfigurableResource]:
    """The live resources, from NUDGE_* environment variables."""

    def secret(name: str) -> EnvVar | None:
        # Secrets reach Dagster as EnvVar references, never as values in its config.
        return EnvVar(name) if os.environ.get(name) else None

    return {
        "warehouse": WarehouseResource(path=str(settings.warehouse)),
        "esp": EspResource(
            provider=settings.esp,
            base_url=settings.esp_base_url,
            api_key=secret("NUDGE_ESP_API_KEY"),
            smtp_password=secret("NUDGE_SMTP_PASSWORD"),
            webhook_secret=secret("NUDGE_WEBHOOK_SECRET"),
            options=settings.esp_options,
            outbox_dir=str(settings.outbox_dir),
            from_email=settings.from_email,
        ),
        "tick": TickResource(),
        "send_policy": SendPolicyResource(**settings.send_policy),
    }
