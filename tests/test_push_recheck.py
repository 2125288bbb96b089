"""Push-time re-checks: what lands after the tick's dbt build is honoured before sending."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from dagster_project import ledger
from dagster_project.dispatch import dispatch_trigger
from dagster_project.policy import DispatchPolicy
from dagster_project.providers import OutboxProvider
from dagster_project.rendering import Renderer
from dagster_project.sequences import parse_sequence
from dagster_project.warehouse import connect
from tests.support.factories import (
    AS_OF,
    CART_SPEC,
    add_subscription,
    cart_row,
    dispatch,
    write_eligibility,
)


@pytest.fixture
def con(engine_con):  # type: ignore[no-untyped-def]
    """These tests run on DuckDB and on PostgreSQL (the same statements)."""
    return engine_con


def _suppress(con, customer_id: str, status: str, minutes_after: int) -> None:
    add_subscription(
        con,
        customer_id,
        status,
        AS_OF + timedelta(minutes=minutes_after),
        list_name="suppression",
    )


def _dispatch(con, spec, outbox: Path):
    return dispatch(
        con, OutboxProvider(outbox), spec=spec, consent_cutoff=AS_OF + timedelta(hours=1)
    )


def test_a_suppression_after_the_build_stops_even_transactional_mail(tmp_path: Path) -> None:
    transactional = replace(
        CART_SPEC,
        sequence=parse_sequence(
            "abandoned_cart",
            {"category": "transactional", "steps": [{"name": "reminder", "delay": "1h"}]},
            "test",
        ),
    )
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    write_eligibility(
        con, [cart_row(k, category="transactional") for k in ("bounced", "lifted", "fine")]
    )
    # A hard bounce recorded after the build; another one lifted again before the push.
    _suppress(con, "cust_bounced", "suppressed", 10)
    _suppress(con, "cust_lifted", "suppressed", 5)
    _suppress(con, "cust_lifted", "subscribed", 20)
    summary = _dispatch(con, transactional, tmp_path / "outbox")
    rows = dict(
        con.execute(
            "select customer_id, status || ':' || coalesce(reason, '') from nudge.send_ledger"
        ).fetchall()
    )
    assert rows == {
        "cust_bounced": "skipped:suppressed_before_send",
        "cust_lifted": "sent:",
        "cust_fine": "sent:",
    }
    assert summary.sent == 2 and summary.skipped == 1
    delivered = {p.stem for p in (tmp_path / "outbox").rglob("*.eml")}
    assert len(delivered) == 2


def test_after_the_cutoff_only_a_no_nudge_recorded_itself_still_counts(tmp_path: Path) -> None:
    """A tick replayed for a past instant sees the shop's imported history as it was then (a
    simulation's data holds its future), but a no someone gave nudge itself happened for real,
    before this email leaves. A later yes is the replay's future either way."""
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    rows = [cart_row(k) for k in ("imported_later", "clicked_later", "lifted_later")]
    write_eligibility(con, rows)
    _suppress(con, "cust_imported_later", "suppressed", 120)  # after the cutoff (+1 h)
    add_subscription(
        con, "cust_clicked_later", "unsubscribed", AS_OF + timedelta(hours=3), source="one_click"
    )
    add_subscription(
        con,
        "cust_lifted_later",
        "subscribed",
        AS_OF + timedelta(hours=3),
        source="preference_page",
    )
    add_subscription(con, "cust_lifted_later", "unsubscribed", AS_OF + timedelta(minutes=30))
    _dispatch(con, CART_SPEC, tmp_path / "outbox")
    statuses = dict(
        con.execute(
            "select customer_id, status || ':' || coalesce(reason, '') from nudge.send_ledger"
        ).fetchall()
    )
    assert statuses == {
        "cust_imported_later": "sent:",
        "cust_clicked_later": "skipped:unsubscribed_before_send",
        "cust_lifted_later": "skipped:unsubscribed_before_send",
    }


def test_a_tick_that_runs_late_into_the_night_leaves_marketing_mail_for_the_morning(
    tmp_path: Path,
) -> None:
    con = connect(tmp_path / "w.duckdb")
    ledger.ensure_ledger(con)
    rows = [cart_row("ny", timezone="America/New_York"), cart_row("tokyo", timezone="Asia/Tokyo")]
    write_eligibility(con, rows)
    # The 12:00 UTC tick actually sends at 14:00 UTC: 10:00 in New York, 23:00 in Tokyo.
    summary = dispatch_trigger(
        con,
        CART_SPEC,
        provider=OutboxProvider(tmp_path / "outbox"),
        renderer=Renderer(),
        as_of=AS_OF,
        run_id="late",
        from_email="shop@example.com",
        policy=DispatchPolicy(),
        consent_cutoff=AS_OF + timedelta(hours=2),
    )
    assert (summary.sent, summary.waiting_quiet_hours) == (1, 1)
    statuses = dict(con.execute("select customer_id, status from nudge.send_ledger").fetchall())
    assert statuses == {"cust_ny": "sent", "cust_tokyo": "planned"}
    # Next morning in Tokyo (00:00 UTC = 09:00 there) the next tick resumes and sends it.
    morning = AS_OF + timedelta(hours=12)
    write_eligibility(
        con,
        [
            cart_row(
                "tokyo",
                timezone="Asia/Tokyo",
                as_of=morning,
                expires_at=morning + timedelta(hours=5),
            )
        ],
    )
    summary = dispatch_trigger(
        con,
        CART_SPEC,
        provider=OutboxProvider(tmp_path / "outbox"),
        renderer=Renderer(),
        as_of=morning,
        run_id="morning",
        from_email="shop@example.com",
        policy=DispatchPolicy(),
        consent_cutoff=morning,
    )
    assert (summary.resumed, summary.sent) == (1, 1)
    assert len(list((tmp_path / "outbox").rglob("*.eml"))) == 2
