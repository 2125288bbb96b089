"""Test data builders: eligibility rows as the dbt models would produce them, rendered
messages as providers receive them, and a stand-in for ``time.sleep``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from dagster_project.providers import Message
from dagster_project.sequences import parse_sequence
from dagster_project.triggers import TriggerSpec
from dagster_project.warehouse import Connection
from tests.support.mirrors import send_id

AS_OF = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

CART_META: dict[str, Any] = {
    "category": "marketing",
    "priority": 80,
    "steps": [
        {"name": "reminder", "delay": "1h", "grace": "24h"},
        {"name": "second_reminder", "delay": "24h", "grace": "24h"},
    ],
}


def cart_spec(**meta: Any) -> TriggerSpec:
    """The abandoned-cart trigger as the send step sees it, with ``config.meta.nudge`` fields
    overridden (``fires_on_absence=True``, ``category="transactional"``, ...)."""
    return TriggerSpec(
        name="abandoned_cart",
        model="abandoned_cart_eligibility",
        relation="audience.abandoned_cart_eligibility",
        sequence=parse_sequence("abandoned_cart", {**CART_META, **meta}, "tests/factories.py"),
    )


# A trigger that fires on presence (a cart), so the source freshness guard leaves it alone
# unless a test asks for an absence trigger with cart_spec(fires_on_absence=True).
CART_SPEC = cart_spec()


def cart_row(key: str, *, as_of: datetime = AS_OF, **overrides: Any) -> dict[str, Any]:
    """One due, eligible abandoned-cart row, as the dbt eligibility model would produce it."""
    row: dict[str, Any] = {
        "send_id": send_id("abandoned_cart", key, "reminder"),
        "trigger": "abandoned_cart",
        "trigger_key": key,
        "step": "reminder",
        "step_index": 1,
        "variant": None,
        "template": "abandoned_cart/reminder",
        "category": "marketing",
        "priority": 80,
        "customer_id": f"cust_{key}",
        "reentry_key": f"cust_{key}",
        "email": f"{key}@example.com",
        "first_name": "Ann",
        "entered_at": as_of - timedelta(hours=1, minutes=5),
        "due_at": as_of - timedelta(minutes=5),
        "expires_at": as_of + timedelta(hours=23),
        "is_eligible": True,
        "exclusion_reason": None,
        "rule_exclusion_reason": None,
        "ledger_status": None,
        "as_of": as_of,
        "items": [{"name": "Mug", "quantity": 1, "price": 12.5, "url": None, "image_url": None}],
        "item_count": 1,
        "cart_value": 12.5,
        "currency": "USD",
        "cart_url": f"https://shop.example/cart/{key}",
    }
    row.update(overrides)
    return row


def write_eligibility(
    con: Connection,
    rows: list[dict[str, Any]],
    relation: str = CART_SPEC.relation,
) -> None:
    """(Re)create an eligibility table from rows, standing in for a dbt build."""
    frame = pl.DataFrame(
        rows,
        schema_overrides={
            "entered_at": pl.Datetime("us", "UTC"),
            "due_at": pl.Datetime("us", "UTC"),
            "expires_at": pl.Datetime("us", "UTC"),
            "variant": pl.String,
            "ledger_status": pl.String,
            "as_of": pl.Datetime("us", "UTC"),
            "exclusion_reason": pl.String,
            "rule_exclusion_reason": pl.String,
            "first_name": pl.String,
        },
    )
    schema = relation.split(".")[0]
    con.execute(f"create schema if not exists {schema}")
    ensure_staging(con)
    con.register("rows_frame", frame.to_arrow())
    con.execute(f"drop table if exists {relation}")
    con.execute(f"create table {relation} as select * from rows_frame")
    con.unregister("rows_frame")


def ledger_rows(con: Connection) -> dict[str, tuple[str, str | None, int]]:
    """send_id -> (status, error, attempts)."""
    return {
        r[0]: (r[1], r[2], r[3])
        for r in con.execute(
            "select send_id, status, error, attempts from nudge.send_ledger"
        ).fetchall()
    }


def ensure_staging(con: Connection) -> None:
    """Empty stand-ins for the views the send step reads (consent changes, events)."""
    con.execute("create schema if not exists staging")
    con.execute("create schema if not exists intermediate")
    con.execute(
        """
        create table if not exists intermediate.int_consent__changes (
            customer_id varchar, list varchar, status varchar, changed_at timestamptz,
            source varchar, send_id varchar
        )
        """
    )
    con.execute(
        """
        create table if not exists staging.stg_raw__events (
            event_id varchar, customer_id varchar, event_name varchar, occurred_at timestamptz
        )
        """
    )


def add_subscription(
    con: duckdb.DuckDBPyConnection,
    customer_id: str,
    status: str,
    changed_at: datetime,
    *,
    list_name: str = "marketing",
    source: str = "import",
) -> None:
    """Record a consent change, as if it landed in raw.subscriptions (source ``import``)."""
    ensure_staging(con)
    con.execute(
        "insert into intermediate.int_consent__changes values (?, ?, ?, ?, ?, null)",
        [customer_id, list_name, status, changed_at, source],
    )


def add_event(con: duckdb.DuckDBPyConnection, customer_id: str, occurred_at: datetime) -> None:
    ensure_staging(con)
    con.execute(
        "insert into staging.stg_raw__events values (gen_random_uuid(), ?, 'product_viewed', ?)",
        [customer_id, occurred_at],
    )


class SleepRecorder:
    """Stands in for ``time.sleep``: records the requested waits, sleeps not at all.

    Providers given an injected ``sleep`` and no ``clock`` advance their clock by the recorded
    waits, so rate-limit pauses complete at once and show up here with their exact length.
    """

    def __init__(self) -> None:
        self.calls: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.calls.append(seconds)


def make_message(n: int = 1, **overrides: Any) -> Message:
    """A rendered message numbered ``n`` (send_id ``send-000n``, ``customer{n}@example.com``)."""
    fields: dict[str, Any] = {
        "send_id": f"send-{n:04d}",
        "trigger": "welcome",
        "step": "day0",
        "customer_id": f"cust-{n}",
        "to_email": f"customer{n}@example.com",
        "from_email": "Nudge Team <hello@nudge.example>",
        "subject": f"Welcome aboard #{n} — café ☕",
        "html": f"<p>Hello customer {n}</p>",
        "text": f"Hello customer {n}",
        "custom_args": {"send_id": f"send-{n:04d}", "trigger": "welcome", "step": "day0"},
    }
    fields.update(overrides)
    return Message(**fields)


def unsubscribe_headers(n: int = 1) -> dict[str, str]:
    """The RFC 2369 / RFC 8058 headers of a marketing message to customer ``n`` (pass them as
    ``make_message(n, headers=unsubscribe_headers(n))``). The per-recipient token makes the
    ``List-Unsubscribe`` value longer than one 78-character line, with words longer than one
    too, as real signed tokens are: exactly what the stdlib would turn into encoded words."""
    token = f"{n:04d}.AbCdEf0123456789-_" * 6
    return {
        "List-Unsubscribe": (
            f"<https://links.nudge.example/u/{token}>, "
            f"<mailto:unsubscribe@nudge.example?subject=unsubscribe-{token}>"
        ),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


PATIENT_TIMEOUT = 10.0
"""A provider timeout no answer from a loopback server outlasts, however loaded the machine."""


def fast_tuning(sleep: Any, /, **overrides: Any) -> dict[str, Any]:
    """A provider's worker and retry settings for tests: few attempts, waits recorded by
    ``sleep`` instead of slept, and jitter at the top of its range so every wait is exactly its
    ceiling. ``overrides`` win.

    The timeout is patient (:data:`PATIENT_TIMEOUT`): a test that wants a timeout to fire asks
    for a short one itself. A short default made answers on a loaded 2-core CI machine read as
    "may have been accepted" in tests that were about something else."""
    return {
        "timeout": PATIENT_TIMEOUT,
        "max_concurrency": 4,
        "max_attempts": 3,
        "backoff_base": 0.5,
        "backoff_max": 5.0,
        "sleep": sleep,
        "jitter": lambda: 1.0,
        **overrides,
    }


def dispatch(
    con: duckdb.DuckDBPyConnection,
    provider: Any,
    *,
    spec: TriggerSpec = CART_SPEC,
    as_of: datetime = AS_OF,
    run_id: str = "run-1",
    renderer: Any = None,
    policy: Any = None,
    **options: Any,
) -> Any:
    """One trigger's push, as a send asset runs it (``dispatch_trigger``), with test defaults:
    the cart trigger at AS_OF, the shipped templates, the default policy."""
    from dagster_project.dispatch import dispatch_trigger
    from dagster_project.policy import DispatchPolicy
    from dagster_project.rendering import Renderer

    return dispatch_trigger(
        con,
        spec,
        provider=provider,
        renderer=renderer or Renderer(),
        as_of=as_of,
        run_id=run_id,
        from_email="shop@example.com",
        policy=policy or DispatchPolicy(),
        **options,
    )
