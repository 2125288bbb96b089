"""Dagster resources: the warehouse, the ESP, the send policy, and the tick's clock.

Each is a ``ConfigurableResource`` so tests and run config swap values instead of patching.
Secrets only ever arrive through ``EnvVar`` (``NUDGE_ESP_API_KEY``, ``NUDGE_SMTP_PASSWORD``,
``NUDGE_WEBHOOK_SECRET``). The send policy's fields are not written here: they are the knobs of
``policy.py``, each declared once there with its default and description.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
from dagster import ConfigurableResource, EnvVar, InitResourceContext
from pydantic import Field

from ..clock import parse_as_of
from ..config import POSTGRES_PASSWORD_VAR, Settings
from ..guards import check_not_late
from ..landing import LandingStore
from ..links import LinkSettings
from ..policy import DispatchPolicy, knobs
from ..postgres import PostgresConnection, PostgresSettings, locked_session
from ..providers import Provider, ProviderSettings, build_provider
from ..warehouse import Connection, connection, warehouse_lock


class WarehouseResource(ConfigurableResource):
    """The warehouse nudge reads and writes, behind the cross-process warehouse lock: a DuckDB
    file (a file lock beside it), or a PostgreSQL database (an advisory lock in it)."""

    path: str = Field(
        description="DuckDB file (NUDGE_WAREHOUSE); for PostgreSQL, the name nudge's local "
        "files for the database go beside (landing store, hand-over journal)."
    )
    postgres_url: str | None = Field(
        default=None,
        description="postgresql://user@host:port/dbname (NUDGE_WAREHOUSE), without password.",
    )
    postgres_password: str | None = Field(
        default=None,
        description="From EnvVar DBT_ENV_SECRET_NUDGE_PG_PASSWORD only.",
        repr=False,
    )
    lock_timeout_seconds: float = Field(
        default=1800.0, description="How long a step waits for another run to release the file."
    )

    @property
    def file(self) -> Path:
        return Path(self.path).resolve()

    @property
    def postgres(self) -> PostgresSettings | None:
        if not self.postgres_url:
            return None
        settings = Settings.from_env(
            {
                "NUDGE_WAREHOUSE": self.postgres_url,
                POSTGRES_PASSWORD_VAR: self.postgres_password or "",
            }
        ).postgres
        assert settings is not None
        return dataclasses.replace(settings, state_dir=self.file.parent)

    @property
    def label(self) -> str:
        """The warehouse as messages name it: the file, or the database and its server."""
        postgres = self.postgres
        if postgres is None:
            return str(self.file)
        return f"PostgreSQL database {postgres.dbname} on {postgres.host}:{postgres.port}"

    def dbt_env(self) -> dict[str, str]:
        """What dbt's profile needs besides NUDGE_WAREHOUSE: the postgres target's variables."""
        postgres = self.postgres
        return postgres.dbt_env() if postgres is not None else {}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        postgres = self.postgres
        if postgres is None:
            with warehouse_lock(self.file, timeout=self.lock_timeout_seconds):
                yield
            return
        # A session of its own holds the lock while dbt, a subprocess, builds the models
        # (PostgreSQL ends it, and the lock, with the process); the sends take it on their
        # working session instead (locked_connection).
        with locked_session(postgres, timeout=self.lock_timeout_seconds):
            yield

    @contextlib.contextmanager
    def locked_connection(self) -> Iterator[Connection]:
        """An open connection, locked against every other nudge process. On PostgreSQL the
        session that works holds the lock itself, so the lock cannot be lost while it works."""
        postgres = self.postgres
        if postgres is None:
            with self.locked(), self.connection() as con:
                yield con
            return
        with locked_session(postgres, timeout=self.lock_timeout_seconds) as con:
            yield con

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """An open connection; call inside ``locked()``."""
        postgres = self.postgres
        if postgres is None:
            with connection(self.file) as duck:
                yield duck
            return
        con = PostgresConnection(postgres)
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
    max_concurrency: int = Field(
        default=8,
        description="Requests in flight at once; a crash leaves at most this many in doubt.",
    )
    max_attempts: int = 5
    batch_size: int | None = Field(
        default=None,
        description="Sends rendered, re-checked against consent and handed to the provider "
        "per batch (answered batches settle in the ledger together once 500 sends wait); "
        "empty: the provider's own (100 for one-message APIs; a full request per worker "
        "for batch APIs, e.g. 8 x 500 for Postmark).",
    )

    def build(self) -> Provider:
        return build_provider(
            ProviderSettings(
                esp=self.provider,
                base_url=self.base_url,
                api_key=self.api_key,
                outbox_dir=Path(self.outbox_dir),
                options=dict(self.options),
                smtp_password=self.smtp_password,
                webhook_secret=self.webhook_secret,
                timeout=self.timeout_seconds,
                max_concurrency=self.max_concurrency,
                max_attempts=self.max_attempts,
            )
        )


def _knob_field(python_type: str, default: Any, doc: str) -> tuple[Any, Any]:
    if python_type == "frozenset[str]":
        return list[str], Field(default_factory=lambda: sorted(default), description=doc)
    return (int if python_type == "int" else float), Field(default=default, description=doc)


class PolicyResource(ConfigurableResource):
    """Guards, retries, frequency caps, pauses and limits of the push (see ``policy.py``).

    Its config fields are added by :data:`SendPolicyResource`, one per knob of the policy;
    assets annotate their ``send_policy`` parameter with this base class.
    """

    def policy(self, batch_size: int | None) -> DispatchPolicy:
        return DispatchPolicy.from_values(self.model_dump(), batch_size=batch_size)


# One config field per knob of policy.py, with its default and description: the run config
# `{"resources": {"send_policy": {"config": {"mass_send_max": 100}}}}` and NUDGE_MASS_SEND_MAX
# set the same thing.
SendPolicyResource: type[PolicyResource] = pydantic.create_model(  # type: ignore[call-overload]
    "SendPolicyResource",
    __base__=PolicyResource,
    __module__=__name__,
    **{k.name: _knob_field(k.python_type, k.default, k.doc) for k in knobs()},
)


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
    full_refresh: bool = Field(
        default=False,
        description=(
            "dbt build --full-refresh: rebuild the incremental models from the whole event "
            "history (after events arrived later than var events_late_arrival_hours, or raw "
            "rows were deleted or corrected)."
        ),
    )

    def check_not_late(self, as_of: datetime, now: datetime | None = None) -> None:
        """The late-tick guard (``guards.check_not_late``) with this tick's settings."""
        check_not_late(as_of, max_lag_hours=self.max_lag_hours, allow_late=self.allow_late, now=now)

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


class ConsentResource(ConfigurableResource):
    """The links nudge puts in email and the landing store of ``nudge serve``'s changes."""

    public_url: str | None = Field(
        default=None, description="Public base URL of nudge serve (NUDGE_PUBLIC_URL)."
    )
    link_secret: str | None = Field(
        default=None, description="From EnvVar NUDGE_LINK_SECRET only.", repr=False
    )
    link_secret_previous: str | None = Field(
        default=None, description="From EnvVar NUDGE_LINK_SECRET_PREVIOUS only.", repr=False
    )
    unsubscribe_mailto: str | None = Field(
        default=None, description="Optional mailto target of List-Unsubscribe."
    )
    confirm_link_days: int = Field(default=7, description="Double opt-in links expire after.")
    landing: str = Field(description="The landing store file (NUDGE_LANDING).")

    def links(self) -> LinkSettings:
        return LinkSettings.build(
            public_url=self.public_url,
            secret=self.link_secret,
            previous_secret=self.link_secret_previous,
            unsubscribe_mailto=self.unsubscribe_mailto,
            confirm_days=self.confirm_link_days,
        )

    def store(self) -> LandingStore:
        return LandingStore(Path(self.landing))


def resources_from_settings(settings: Settings) -> dict[str, ConfigurableResource]:
    """The live resources, from NUDGE_* environment variables."""

    def secret(name: str) -> EnvVar | None:
        # Secrets reach Dagster as EnvVar references, never as values in its config.
        return EnvVar(name) if os.environ.get(name) else None

    provider = settings.provider
    return {
        "warehouse": WarehouseResource(
            path=str(settings.warehouse),
            postgres_url=settings.postgres.url if settings.postgres else None,
            postgres_password=secret(POSTGRES_PASSWORD_VAR) if settings.postgres else None,
        ),
        "esp": EspResource(
            provider=provider.esp,
            base_url=provider.base_url,
            api_key=secret("NUDGE_ESP_API_KEY"),
            smtp_password=secret("NUDGE_SMTP_PASSWORD"),
            webhook_secret=secret("NUDGE_WEBHOOK_SECRET"),
            options=provider.options,
            outbox_dir=str(provider.outbox_dir),
            from_email=settings.from_email,
        ),
        "consent": ConsentResource(
            public_url=os.environ.get("NUDGE_PUBLIC_URL") or None,
            link_secret=secret("NUDGE_LINK_SECRET"),
            link_secret_previous=secret("NUDGE_LINK_SECRET_PREVIOUS"),
            unsubscribe_mailto=os.environ.get("NUDGE_UNSUBSCRIBE_MAILTO") or None,
            confirm_link_days=settings.confirm_link_days,
            landing=str(settings.landing_path),
        ),
        "tick": TickResource(),
        "send_policy": SendPolicyResource(**settings.send_policy),
    }
