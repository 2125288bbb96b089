"""The reporting models end to end: a planted ledger, provider events and orders, a real tick
(dbt builds the models the reports read), then the real reporting job (Dagster materializing
the reporting dbt assets), and the figures in the warehouse checked against a hand computation.

The planted set: 1,000 customers received win_back's email and 100 of them ordered within the
window (90 in USD, 10 in EUR), 50 more only after it; 1,000 were held out and 60 ordered. The
discount step's two variants: 500 sends each, 100 against 50 clicks.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dagster_project import ledger
from dagster_project.cli import main
from dagster_project.config import Settings
from dagster_project.providers import ProviderSettings
from dagster_project.tick import TickOutcome, run_tick
from tests.support.raw_tables import create_raw_tables

pytestmark = pytest.mark.dbt

TICK = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
AS_OF = TICK + timedelta(days=7)
N = 1000
LATE_SENDS = 3
Z95 = 1.959964


@dataclass
class Built:
    settings: Settings
    tick: TickOutcome
    reporting_after_tick: set[str]  # reporting tables the hourly tick left
    report_exit: int  # `nudge report`: the reporting job as of the last tick, then the HTML
    report_out: str
    reports: Path


def _ledger_row(con: duckdb.DuckDBPyConnection, send_id: str, **row: object) -> None:
    values = {
        "send_id": send_id,
        "trigger_key": send_id,
        "attempts": 1,
        "run_id": "planted",
        "as_of": TICK,
        "planned_at": TICK,
        "updated_at": TICK,
        "category": "marketing",
        **row,
    }
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    con.execute(
        f"insert into nudge.send_ledger ({columns}) values ({marks})", list(values.values())
    )


def _order(
    con: duckdb.DuckDBPyConnection,
    customer: str,
    at: datetime,
    revenue: float,
    currency: str = "USD",
) -> None:
    order = {"order_id": f"o-{customer}-{at:%d%H}", "revenue": revenue, "currency": currency}
    con.execute(
        "insert into raw.events values (?, ?, 'order_completed', ?, ?)",
        [f"e-{order['order_id']}", customer, at, json.dumps(order)],
    )


def _plant(path: Path) -> None:
    con = duckdb.connect(str(path))
    create_raw_tables(con)
    ledger.ensure_ledger(con)
    day = TICK + timedelta(days=1)
    for i in range(N):
        _ledger_row(
            con,
            f"t{i}",
            trigger="win_back",
            step="we_miss_you",
            step_index=1,
            customer_id=f"t{i}",
            status="sent",
            provider="outbox",
            sent_as_of=TICK,
            settled_at=TICK,
        )
        _ledger_row(
            con,
            f"h{i}",
            trigger="win_back",
            step="we_miss_you",
            step_index=1,
            customer_id=f"h{i}",
            status="holdout",
            reason="holdout",
            settled_at=TICK,
        )
        if i < 90:
            _order(con, f"t{i}", day, 50.0)
        elif i < 100:
            _order(con, f"t{i}", day, 40.0, "EUR")
        elif i < 150:  # after the 5-day window: not a conversion
            _order(con, f"t{i}", TICK + timedelta(days=5, seconds=1), 50.0)
        if i < 60:
            _order(con, f"h{i}", day, 50.0)
    for variant, clicks in (("ten_percent", 100), ("free_shipping", 50)):
        for i in range(500):
            send_id = f"{variant}{i}"
            _ledger_row(
                con,
                send_id,
                trigger="abandoned_cart",
                step="discount",
                step_index=3,
                variant=variant,
                customer_id=f"c{send_id}",
                status="sent",
                provider="outbox",
                sent_as_of=TICK,
                settled_at=TICK,
            )
            if i < clicks:
                con.execute(
                    "insert into nudge.email_events (event_id, provider, send_id, event_type,"
                    " is_machine_open, occurred_at, received_at, drained_at)"
                    " values (?, 'webhook', ?, 'clicked', false, ?, ?, ?)",
                    [
                        f"click-{send_id}",
                        send_id,
                        TICK + timedelta(hours=1),
                        TICK + timedelta(hours=1),
                        TICK + timedelta(hours=1),
                    ],
                )
    con.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tmp = tmp_path_factory.mktemp("reporting")
    warehouse = tmp / "warehouse.duckdb"
    _plant(warehouse)
    settings = Settings(
        warehouse=warehouse,
        provider=ProviderSettings(esp="outbox", outbox_dir=tmp / "outbox"),
        from_email="Shop <shop@example.com>",
        dagster_home=tmp / "dagster_home",
    )
    # No customer is known, so the tick sends nothing: it builds what the reports read.
    tick = run_tick(AS_OF.isoformat(), settings=settings, allow_late=True)
    after_tick = {
        name
        for (name,) in _query(
            settings, "select table_name from duckdb_tables() where schema_name = 'reporting'"
        )
    }
    # What the tick's push sends comes after its dbt build: three order confirmations at its
    # instant, in the ledger but in no model the tick built.
    con = duckdb.connect(str(warehouse))
    try:
        for i in range(LATE_SENDS):
            _ledger_row(
                con,
                f"late{i}",
                trigger="order_confirmation",
                step="confirmation",
                step_index=0,
                category="transactional",
                customer_id=f"late{i}",
                status="sent",
                provider="sendgrid",
                as_of=AS_OF,
                sent_as_of=AS_OF,
                settled_at=AS_OF,
            )
    finally:
        con.close()
    # Then what a marketer runs: the reporting job as of that tick, and the report.
    mp = pytest.MonkeyPatch()
    mp.setenv("NUDGE_WAREHOUSE", str(warehouse))
    mp.setenv("DAGSTER_HOME", str(settings.dagster_home))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["report", "--out", str(tmp / "reports")])
    mp.undo()
    yield Built(settings, tick, after_tick, code, out.getvalue(), tmp / "reports")


def _query(settings: Settings, query: str) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _p_value(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def test_nudge_report_builds_the_reports_as_of_the_last_tick_then_writes_them(
    built: Built,
) -> None:
    assert built.tick.success, built.tick.error
    # The hourly tick does not build the reports: it leaves them to the reporting job.
    assert built.reporting_after_tick == set()
    assert built.report_exit == 0, built.report_out
    assert f"reporting models built as of {AS_OF.isoformat()}" in built.report_out
    (report,) = built.reports.glob("nudge-report-*.html")
    assert f"report: {report.as_uri()}" in built.report_out
    assert "win_back" in report.read_text()


def test_holdout_lift_matches_a_hand_computation(built: Built) -> None:
    (row,) = _query(
        built.settings,
        "select treatment_recipients, holdout_recipients, treatment_conversions,"
        " holdout_conversions, absolute_lift, absolute_lift_ci_low, absolute_lift_ci_high,"
        " relative_lift, relative_lift_ci_low, relative_lift_ci_high, z_score, p_value,"
        " incremental_conversions, is_significant, verdict"
        " from reporting.rpt_holdout_lift where experiment = 'win_back'",
    )
    n_t = n_h = N
    c_t, c_h = 100, 60
    p_t, p_h = c_t / n_t, c_h / n_h
    diff = p_t - p_h
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_h * (1 - p_h) / n_h)
    pooled = (c_t + c_h) / (n_t + n_h)
    z = diff / math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_h))
    log_se = math.sqrt(1 / c_t - 1 / n_t + 1 / c_h - 1 / n_h)
    expected = (
        n_t,
        n_h,
        c_t,
        c_h,
        diff,
        diff - Z95 * se,
        diff + Z95 * se,
        diff / p_h,
        math.exp(math.log(p_t / p_h) - Z95 * log_se) - 1,
        math.exp(math.log(p_t / p_h) + Z95 * log_se) - 1,
        z,
        _p_value(z),
        diff * n_t,
    )
    assert row[:4] == expected[:4]
    assert row[4:11] == pytest.approx(expected[4:11], rel=1e-6)
    # SQL has no erf: the model's normal tail is Abramowitz and Stegun's, within 1.5e-7.
    assert row[11] == pytest.approx(expected[11], abs=1.5e-7)
    assert row[12] == pytest.approx(expected[12], rel=1e-6)
    assert row[13:] == (True, "positive")


def test_holdout_revenue_is_per_currency(built: Built) -> None:
    rows = _query(
        built.settings,
        "select currency, treatment_revenue, holdout_revenue, incremental_revenue"
        " from reporting.rpt_holdout_revenue where experiment = 'win_back' order by currency",
    )
    assert rows == [
        ("EUR", pytest.approx(400.0), pytest.approx(0.0), pytest.approx(400.0)),
        ("USD", pytest.approx(4500.0), pytest.approx(3000.0), pytest.approx(1500.0)),
    ]


def test_ab_results_name_the_winner_only_when_significant(built: Built) -> None:
    rows = _query(
        built.settings,
        "select variant, sent, clicked, click_rate, click_rate_ci_low, click_p_value,"
        " is_click_winner, verdict from reporting.rpt_ab_results order by variant",
    )
    (free, ten) = rows
    z = (0.2 - 0.1) / math.sqrt(0.15 * 0.85 * (2 / 500))
    # Wilson's lower bound for 100 of 500.
    p, n = 0.2, 500
    low = (p + Z95**2 / (2 * n) - Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))) / (
        1 + Z95**2 / n
    )
    assert ten[:3] == ("ten_percent", 500, 100)
    assert ten[3:5] == pytest.approx((0.2, low), rel=1e-6)
    assert ten[5] == pytest.approx(_p_value(z), abs=1.5e-7)
    assert ten[6:] == (True, "winner")
    assert free[0] == "free_shipping" and free[6:] == (False, "behind")


def test_trigger_daily_counts_sends_and_attributed_conversions(built: Built) -> None:
    rows = _query(
        built.settings,
        "select trigger, step, variant, sent, clicked, conversions, conversion_rate"
        " from reporting.rpt_trigger_daily order by trigger, variant",
    )
    assert rows == [
        ("abandoned_cart", "discount", "free_shipping", 500, 50, 0, 0.0),
        ("abandoned_cart", "discount", "ten_percent", 500, 100, 0, 0.0),
        ("order_confirmation", "confirmation", None, LATE_SENDS, 0, 0, 0.0),
        ("win_back", "we_miss_you", None, 1000, 0, 100, 0.1),
    ]
    revenue = _query(
        built.settings,
        "select currency, conversions, revenue from reporting.rpt_trigger_revenue_daily"
        " order by currency",
    )
    assert revenue == [("EUR", 10, 400), ("USD", 90, 4500)]


def test_deliverability_counts_the_sends_of_the_last_tick_as_the_other_reports_do(
    built: Built,
) -> None:
    """Regression: rpt_deliverability read int_email_events__by_send, which the hourly tick
    builds before its push and the reporting job does not rebuild, so the last tick's sends
    were missing from it alone (found comparing the report on PostgreSQL and DuckDB)."""
    deliverability = _query(
        built.settings,
        "select provider, sent_on, sent from reporting.rpt_deliverability order by 1, 2",
    )
    assert deliverability == [
        ("outbox", TICK.date(), 2 * N),
        ("sendgrid", AS_OF.date(), LATE_SENDS),
    ]
    daily = _query(
        built.settings,
        "select sent_on, sum(sent) from reporting.rpt_trigger_daily group by 1 order by 1",
    )
    assert daily == [(TICK.date(), 2 * N), (AS_OF.date(), LATE_SENDS)]


def test_reporting_models_and_columns_are_documented_in_the_warehouse(built: Built) -> None:
    undocumented = _query(
        built.settings,
        "select table_name, column_name from duckdb_columns()"
        " where schema_name = 'reporting' and comment is null",
    )
    assert undocumented == []
    tables = _query(
        built.settings,
        "select table_name from duckdb_tables() where schema_name = 'reporting' order by 1",
    )
    assert [t for (t,) in tables] == [
        "fct_sends",
        "rpt_ab_results",
        "rpt_deliverability",
        "rpt_holdout_lift",
        "rpt_holdout_revenue",
        "rpt_trigger_daily",
        "rpt_trigger_revenue_daily",
    ]


def test_headline_figures_are_asset_metadata(built: Built) -> None:
    from dagster import AssetKey

    from dagster_project.tick import dagster_instance

    with dagster_instance(built.settings.dagster_home) as instance:
        lift = instance.get_latest_materialization_event(
            AssetKey(["reporting", "rpt_holdout_lift"])
        )
        daily = instance.get_latest_materialization_event(
            AssetKey(["reporting", "rpt_trigger_daily"])
        )
    assert lift is not None and daily is not None
    lift_md = lift.asset_materialization.metadata["headline"].value
    assert "| win_back | 1,000 | 1,000 | 10.0 % | 6.0 % | 4.0 % |" in lift_md
    assert "positive" in lift_md
    daily_md = daily.asset_materialization.metadata["headline"].value
    assert "EUR 400.00" in daily_md and "USD 4,500.00" in daily_md
    # Aggregates only: no customer id reaches the metadata.
    assert "t1" not in lift_md + daily_md
