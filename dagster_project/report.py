"""``nudge report``: one self-contained HTML file of what the sequences did, with charts.

It reads the ``reporting`` schema the dbt models build and writes five sections, each a chart
with a table of the same figures beside it:

(a) emails sent per UTC day, stacked by trigger;
(b) the funnel per trigger and step: sent, delivered, opened (people), clicked, converted,
    with the revenue per currency;
(c) holdout lift per experiment: the absolute lift with its 95 % confidence interval against
    zero, the verdict in words, and the incremental revenue per currency;
(d) A/B variants per step: click and conversion rates with their intervals, the winner marked
    only when the model's verdict names one;
(e) deliverability per provider and day: complaint and hard-bounce rates against the limits
    the deliverability guard holds marketing at.

Why plotly: its charts are drawn in the browser by plotly.js from JSON in the page, so one HTML
file with the library inlined once (about 5 MB) opens anywhere, offline (an email attachment, a
shared drive, a laptop on a plane): no server, no CDN, no image files beside it, and the charts
still hover and zoom. Static images (matplotlib) would lose the hover values, and a CDN script
would leave a blank page wherever the network is closed.

The tables format figures for people ("12.5%", "1,234", "USD 1,234.50"); every cell that
carries a figure also holds the raw value in ``data-value``, so a test or a script can read the
numbers back exactly. Amounts in different currencies are never added. Every text that comes
from the warehouse (trigger and step names come from the user's YAML) is HTML-escaped, in the
tables and in the charts' labels alike.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from .config import ConfigError, Settings
from .warehouse import (
    MISSING_ERRORS,
    MISSING_RELATION_ERRORS,
    Connection,
    locked_warehouse,
    sql_for,
)

Row = dict[str, Any]

NO_DATA = "no data yet: run a tick"
BLANK = "\u2013"  # an en dash in a cell with no figure (a null)
# A tick holds the warehouse while dbt builds the reporting models; the report waits for it
# rather than reading half-built tables, but not for as long as a backtest may take.
LOCK_TIMEOUT_S = 600.0

# Query (sql/reports/report_<name>.sql) -> the relation it reads and whether the range applies.
QUERIES: dict[str, tuple[str, bool]] = {
    "sends_daily": ("rpt_trigger_daily", True),
    "funnel": ("rpt_trigger_daily", True),
    "revenue": ("rpt_trigger_revenue_daily", True),
    "lift": ("rpt_holdout_lift", False),
    "lift_revenue": ("rpt_holdout_revenue", False),
    "ab": ("rpt_ab_results", False),
    "deliverability": ("rpt_deliverability", True),
}

LIFT_VERDICTS = {
    "positive": "more conversions than the holdout (significant)",
    "negative": "fewer conversions than the holdout (significant)",
    "not_significant": "not significant",
    "insufficient_sample": "too few recipients to tell",
}
LIFT_COLOURS = {
    "positive": "#1e8449",
    "negative": "#c0392b",
    "not_significant": "#5d6d7e",
    "insufficient_sample": "#b7950b",
}
AB_VERDICTS = {
    "winner": "a variant wins",
    "no_winner": "no clear winner",
    "insufficient_sample": "too few sends to tell",
}
FUNNEL_STAGES = ("sent", "delivered", "opened (people)", "clicked", "converted")
FUNNEL_COLUMNS = ("sent", "delivered", "opened", "clicked", "conversions")

_CHART_CONFIG = {"displaylogo": False, "responsive": True}
_DAY_MS = 86_400_000

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1c2833; background: #f8f9f9; }
header, section { max-width: 1200px; margin: 0 auto; padding: 12px 24px; }
header { border-bottom: 1px solid #d5d8dc; }
h1 { margin: 8px 0 4px; } h2 { margin: 20px 0 6px; }
.meta { color: #566573; margin: 0 0 8px; }
nav a { margin-right: 14px; }
section { background: #fff; margin-top: 16px; border: 1px solid #e5e8e8; border-radius: 6px; }
.note { color: #566573; margin: 0 0 8px; }
.empty { color: #7b7d7d; font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 10px 0 14px; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { padding: 3px 9px; border-bottom: 1px solid #eaeded; white-space: nowrap; }
th { background: #f2f3f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.over { color: #c0392b; font-weight: 600; }
td.verdict-positive { color: #1e8449; font-weight: 600; }
td.verdict-negative { color: #c0392b; font-weight: 600; }
td.winner { color: #9a7d0a; font-weight: 600; }
"""


def write_report(
    warehouse: Path | Settings,
    out: Path,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    now: datetime | None = None,
) -> Path:
    """Write ``<out>/nudge-report-<from>-<to>.html`` from the warehouse's reporting schema.

    ``warehouse`` is a DuckDB file, or the settings of any warehouse (a PostgreSQL database).

    The range (UTC days the emails were sent) defaults to the days with sends. Lift and A/B
    results have no days: they cover every send up to the last tick whatever the range. A
    missing or empty reporting table leaves its section saying so; a warehouse without the
    reporting schema is a :class:`ConfigError` (run ``nudge run``, then ``nudge report``).
    """
    now = now or datetime.now(UTC)
    settings = _settings(warehouse)
    data = _load(settings, date_from, date_to, today=now.date())
    page = _page(data, settings.warehouse_setting, now)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"nudge-report-{data.date_from.isoformat()}-{data.date_to.isoformat()}.html"
    path.write_text(page, encoding="utf-8")
    return path


# -- reading the warehouse ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    date_from: date
    date_to: date
    last_day: date | None
    relations: frozenset[str]
    rows: dict[str, list[Row]]
    # Query name -> why its table could not be read (an older model without a column).
    problems: dict[str, str]


def _settings(warehouse: Path | Settings) -> Settings:
    return warehouse if isinstance(warehouse, Settings) else Settings(warehouse=warehouse)


def _open(settings: Settings) -> AbstractContextManager[Connection]:
    """The warehouse, locked: a tick holds it while dbt builds the reporting models, and the
    report waits for it rather than read half-built tables."""
    if settings.postgres is None and not settings.warehouse.exists():
        # Opening would create an empty file: say what to do instead.
        raise ConfigError(
            f"no warehouse at {settings.warehouse}: run `nudge run` (or `nudge demo`) first"
        )
    return locked_warehouse(settings, timeout=LOCK_TIMEOUT_S)


def _load(
    settings: Settings, date_from: date | None, date_to: date | None, *, today: date
) -> _Data:
    if date_from and date_to and date_from > date_to:
        raise ConfigError(f"the report's range starts ({date_from}) after it ends ({date_to})")
    with _open(settings) as con:
        found = con.execute(sql_for(con, "reports/report_relations")).fetchall()
        if not found:
            raise ConfigError(
                f"{settings.warehouse_setting} has no reporting schema: run `nudge run` first, "
                "then `nudge report` without --no-refresh (it builds the reporting models it "
                "reads)"
            )
        relations = frozenset(str(name) for _, name in found if name)
        first = last = None
        if "rpt_trigger_daily" in relations:
            bounds = _rows(con, "bounds", None)
            if bounds:
                first, last = bounds[0]["first_day"], bounds[0]["last_day"]
        start, end = _range(date_from, date_to, first, last, today)
        rows: dict[str, list[Row]] = {}
        problems: dict[str, str] = {}
        for name, (relation, dated) in QUERIES.items():
            if relation not in relations:
                continue
            params = {"date_from": start, "date_to": end} if dated else None
            try:
                rows[name] = _rows(con, name, params)
            except MISSING_ERRORS as error:
                reason = str(error).splitlines()[0]
                problems[name] = (
                    f"reporting.{relation} lacks what this report reads ({reason}); it predates "
                    "this version of nudge: run a tick to rebuild it."
                )
    return _Data(start, end, last, relations, rows, problems)


def _rows(con: Connection, name: str, params: dict[str, Any] | None) -> list[Row]:
    cursor = con.execute(sql_for(con, f"reports/report_{name}"), params or {})
    names = [column[0] for column in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _range(
    date_from: date | None,
    date_to: date | None,
    first: date | None,
    last: date | None,
    today: date,
) -> tuple[date, date]:
    """The range asked for, an open end closed by the days with sends (else today)."""
    end = date_to or (last if last and (date_from is None or last >= date_from) else None)
    end = end or date_from or today
    start = date_from or (first if first and first <= end else end)
    return start, end


# -- formatting ----------------------------------------------------------------------------------


def _raw(value: Any) -> str | None:
    """The machine value of a cell for ``data-value``: exact, so it compares with the warehouse."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # round-trips to the same double
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    return str(value)


def _count(value: Any) -> str:
    return f"{int(value):,}"


def _pct(value: Any) -> str:
    """A rate as a percentage: two decimals below 1 %, where limits like 0.3 % live, else one."""
    percent = float(value) * 100
    return f"{percent:.2f}%" if abs(percent) < 1 else f"{percent:.1f}%"


def _points(value: Any) -> str:
    """A difference of rates, in signed percentage points."""
    return f"{float(value) * 100:+.2f} pp"


def _relative(value: Any) -> str:
    return f"{float(value) * 100:+.1f}%"


def _p_value(value: Any) -> str:
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _money(currency: Any) -> Callable[[Any], str]:
    def fmt(amount: Any) -> str:
        return f"{currency} {Decimal(str(amount)):,.2f}"

    return fmt


def _label(text: Any) -> str:
    """Warehouse text for a chart: plotly reads a few HTML tags in labels, so escape them."""
    return html.escape("(none)" if text is None else str(text), quote=False)


@dataclass(frozen=True)
class _Cell:
    text: str
    value: Any = None  # the raw value, for data-value; None for a null
    numeric: bool = False
    css: str = ""


@dataclass(frozen=True)
class _Column:
    """A table column: its header, the row field it shows, and how to show it."""

    header: str
    field: str
    cell: Callable[[Row], _Cell]


def _text(header: str, field: str, shown: Callable[[Any], str] = str) -> _Column:
    def cell(row: Row) -> _Cell:
        value = row[field]
        return _Cell(BLANK if value is None else shown(value), value)

    return _Column(header, field, cell)


def _num(header: str, field: str, fmt: Callable[[Any], str] = _count) -> _Column:
    def cell(row: Row) -> _Cell:
        value = row[field]
        return _Cell(BLANK if value is None else fmt(value), value, numeric=True)

    return _Column(header, field, cell)


def _money_in(header: str, field: str) -> _Column:
    """An amount in the row's own currency: amounts of different currencies never meet."""

    def cell(row: Row) -> _Cell:
        value = row[field]
        shown = BLANK if value is None else _money(row["currency"])(value)
        return _Cell(shown, value, numeric=True)

    return _Column(header, field, cell)


def _day(value: Any) -> str:
    return f"{value:%a %Y-%m-%d}"


def _table(
    table_id: str, columns: Sequence[_Column], rows: Iterable[Row], caption: str = ""
) -> str:
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in columns)
    body = []
    for row in rows:
        tds = []
        for column in columns:
            cell = column.cell(row)
            classes = " ".join(c for c in ("num" if cell.numeric else "", cell.css) if c)
            attrs = f' data-field="{html.escape(column.field)}"'
            raw = _raw(cell.value)
            if raw is not None:
                attrs += f' data-value="{html.escape(raw)}"'
            if classes:
                attrs += f' class="{html.escape(classes)}"'
            tds.append(f"<td{attrs}>{html.escape(cell.text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table id="{table_id}">{title}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _chart(fig: go.Figure, div_id: str, height: int) -> str:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        # Above the plot: below it the legend collides with long axis titles.
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,  # the page carries plotly.js once, in its head
            div_id=div_id,
            config=_CHART_CONFIG,
            default_height=f"{height}px",
        )
    )


def _date_axis(days: Sequence[date]) -> dict[str, Any]:
    axis: dict[str, Any] = {"type": "date", "tickformat": "%a %d %b"}
    if days and (max(days) - min(days)).days <= 31:
        axis["dtick"] = _DAY_MS  # a tick per day, not plotly's hours on a short range
    return axis


def _unavailable(data: _Data, name: str) -> str | None:
    """Why a section has nothing to show, or None when its query returned rows."""
    relation, dated = QUERIES[name]
    if relation not in data.relations:
        return f"{NO_DATA} (reporting.{relation} is not in the warehouse)."
    if name in data.problems:
        return data.problems[name]
    if not data.rows.get(name):
        scope = f" for {data.date_from} to {data.date_to}" if dated else ""
        return f"{NO_DATA} (reporting.{relation} has no rows{scope})."
    return None


def _empty(message: str) -> str:
    return f'<p class="empty">{html.escape(message)}</p>'


# -- the sections ----------------------------------------------------------------------------


def _sends_section(data: _Data) -> str:
    missing = _unavailable(data, "sends_daily")
    if missing:
        return _empty(missing)
    rows = data.rows["sends_daily"]
    fig = go.Figure()
    for trigger in sorted({r["trigger"] for r in rows}):
        mine = [r for r in rows if r["trigger"] == trigger]
        fig.add_trace(
            go.Bar(
                x=[r["sent_on"].isoformat() for r in mine],
                y=[int(r["sent"]) for r in mine],
                name=_label(trigger),
            )
        )
    fig.update_layout(
        barmode="stack",
        xaxis=_date_axis([r["sent_on"] for r in rows]),
        yaxis={"title": {"text": "emails sent"}, "tickformat": ","},
    )
    table = _table(
        "table-sends",
        [
            _text("Day", "sent_on", _day),
            _text("Trigger", "trigger"),
            _num("Sent", "sent"),
            _num("Delivered", "delivered"),
            _num("Bounced", "bounced"),
            _num("Unsubscribed", "unsubscribed"),
            _num("Complained", "complained"),
        ],
        rows,
    )
    return _chart(fig, "chart-sends", 380) + table


def _funnel_section(data: _Data) -> str:
    missing = _unavailable(data, "funnel")
    if missing:
        parts = [_empty(missing)]
    else:
        rows = data.rows["funnel"]
        fig = go.Figure()
        for r in rows:
            counts = [int(r[c] or 0) for c in FUNNEL_COLUMNS]
            sent = counts[0] or 1
            # Shares of sent, not counts: a step with 150 sends stays readable beside one with
            # thousands, and the funnels compare; the counts are in the hover and the table.
            fig.add_trace(
                go.Bar(
                    x=list(FUNNEL_STAGES),
                    y=[n / sent for n in counts],
                    customdata=counts,
                    name=f"{_label(r['trigger'])} / {_label(r['step'])}",
                    hovertemplate="%{x}: %{customdata:,} (%{y:.1%} of sent)",
                )
            )
        fig.update_layout(
            barmode="group",
            yaxis={"title": {"text": "share of emails sent"}, "tickformat": ".0%"},
        )
        table = _table(
            "table-funnel",
            [
                _text("Trigger", "trigger"),
                _text("Step", "step"),
                _num("Sent", "sent"),
                _num("Delivered", "delivered"),
                _num("Opened (people)", "opened"),
                _num("Clicked", "clicked"),
                _num("Converted", "conversions"),
                _num("Converted / sent", "conversion_rate", _pct),
            ],
            rows,
        )
        parts = [_chart(fig, "chart-funnel", 400), table]
    revenue_missing = _unavailable(data, "revenue")
    if revenue_missing:
        parts.append(_empty("Revenue: " + revenue_missing))
    else:
        parts.append(
            _table(
                "table-revenue",
                [
                    _text("Trigger", "trigger"),
                    _text("Currency", "currency"),
                    _num("Conversions", "conversions"),
                    _money_in("Revenue", "revenue"),
                ],
                data.rows["revenue"],
                caption="Revenue from these sends' conversions, per currency (never added "
                "across currencies)",
            )
        )
    return "".join(parts)


def _lift_words(verdict: Any) -> str:
    return LIFT_VERDICTS.get(str(verdict), str(verdict))


def _lift_verdict_cell(row: Row) -> _Cell:
    verdict = row["verdict"]
    return _Cell(_lift_words(verdict), verdict, css=f"verdict-{verdict}")


def _experiment_label(row: Row) -> str:
    if row["experiment_type"] == "control_group":
        return "control group (all triggers)"
    return str(row["experiment"])


def _lift_section(data: _Data) -> str:
    missing = _unavailable(data, "lift")
    if missing:
        parts = [_empty(missing)]
    else:
        rows = data.rows["lift"]
        fig = go.Figure()
        for verdict in dict.fromkeys(str(r["verdict"]) for r in rows):
            mine = [
                r for r in rows if str(r["verdict"]) == verdict and r["absolute_lift"] is not None
            ]
            if not mine:
                continue
            lifts = [float(r["absolute_lift"]) for r in mine]
            fig.add_trace(
                go.Scatter(
                    x=lifts,
                    y=[_label(_experiment_label(r)) for r in mine],
                    mode="markers",
                    marker={"size": 12, "color": LIFT_COLOURS.get(verdict, "#2e86c1")},
                    name=_label(_lift_words(verdict)),
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": [
                            _above(r["absolute_lift_ci_high"], lift)
                            for r, lift in zip(mine, lifts, strict=True)
                        ],
                        "arrayminus": [
                            _below(r["absolute_lift_ci_low"], lift)
                            for r, lift in zip(mine, lifts, strict=True)
                        ],
                        "thickness": 2,
                        "width": 6,
                    },
                    text=[_lift_hover(r) for r in mine],
                    hovertemplate="%{text}<extra></extra>",
                )
            )
        fig.add_vline(x=0, line_dash="dash", line_color="#566573")
        fig.update_layout(
            xaxis={
                "title": {"text": "absolute lift in conversion rate, treatment minus holdout"},
                "tickformat": "+.1%",
                "zeroline": False,
            },
            yaxis={"type": "category", "automargin": True},
        )
        table = _table(
            "table-lift",
            [
                _text("Experiment", "experiment"),
                _Column("Verdict", "verdict", _lift_verdict_cell),
                _num("Absolute lift", "absolute_lift", _points),
                _num("95% CI low", "absolute_lift_ci_low", _points),
                _num("95% CI high", "absolute_lift_ci_high", _points),
                _num("Incremental conversions", "incremental_conversions", _decimal1),
                _num("Relative lift", "relative_lift", _relative),
                _num("95% CI low", "relative_lift_ci_low", _relative),
                _num("95% CI high", "relative_lift_ci_high", _relative),
                _num("p-value", "p_value", _p_value),
                _num("Conversion rate (treatment)", "treatment_conversion_rate", _pct),
                _num("Conversion rate (holdout)", "holdout_conversion_rate", _pct),
                _num("Recipients (treatment)", "treatment_recipients"),
                _num("Recipients (holdout)", "holdout_recipients"),
                _num("Conversions (treatment)", "treatment_conversions"),
                _num("Conversions (holdout)", "holdout_conversions"),
                _text("Type", "experiment_type"),
            ],
            rows,
        )
        parts = [_chart(fig, "chart-lift", 140 + 50 * min(len(rows), 12)), table]
    revenue_missing = _unavailable(data, "lift_revenue")
    if revenue_missing:
        parts.append(_empty("Revenue: " + revenue_missing))
    else:
        parts.append(
            _table(
                "table-lift-revenue",
                [
                    _text("Experiment", "experiment"),
                    _text("Currency", "currency"),
                    _money_in("Incremental revenue", "incremental_revenue"),
                    _money_in("Revenue (treatment)", "treatment_revenue"),
                    _money_in("Revenue (holdout)", "holdout_revenue"),
                    _money_in("Per recipient (treatment)", "treatment_revenue_per_recipient"),
                    _money_in("Per recipient (holdout)", "holdout_revenue_per_recipient"),
                ],
                data.rows["lift_revenue"],
                caption="Incremental revenue per currency (never added across currencies)",
            )
        )
    return "".join(parts)


def _decimal1(value: Any) -> str:
    return f"{float(value):,.1f}"


def _above(high: Any, centre: float) -> float:
    return max(float(high) - centre, 0.0) if high is not None else 0.0


def _below(low: Any, centre: float) -> float:
    return max(centre - float(low), 0.0) if low is not None else 0.0


def _lift_hover(row: Row) -> str:
    low, high = row["absolute_lift_ci_low"], row["absolute_lift_ci_high"]
    interval = (
        f"95% CI {_points(low)} to {_points(high)}"
        if low is not None and high is not None
        else "no interval"
    )
    return (
        f"{_label(_experiment_label(row))}<br>lift {_points(row['absolute_lift'])} ({interval})"
        f"<br>{_label(_lift_words(row['verdict']))}"
    )


def _verdict_names_winner(verdict: Any) -> bool:
    """Whether the A/B verdict declares a winner ('winner', or e.g. 'click_winner')."""
    text = str(verdict or "")
    return "winner" in text and not text.startswith("no")


def _ab_section(data: _Data) -> str:
    missing = _unavailable(data, "ab")
    if missing:
        return _empty(missing)
    rows = data.rows["ab"]
    x = [
        [f"{_label(r['trigger'])} / {_label(r['step'])}" for r in rows],
        [_label(r["variant"]) for r in rows],
    ]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("click rate (95% CI)", "conversion rate (95% CI)"),
        horizontal_spacing=0.1,
    )
    for col, (metric, flag, colour) in enumerate(
        (
            ("click_rate", "is_click_winner", "#2e86c1"),
            ("conversion_rate", "is_conversion_winner", "#8e44ad"),
        ),
        start=1,
    ):
        values = [float(r[metric]) if r[metric] is not None else None for r in rows]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=values,
                mode="markers",
                marker={"size": 10, "color": colour},
                name=metric.replace("_", " "),
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [
                        _above(r[f"{metric}_ci_high"], v or 0.0)
                        for r, v in zip(rows, values, strict=True)
                    ],
                    "arrayminus": [
                        _below(r[f"{metric}_ci_low"], v or 0.0)
                        for r, v in zip(rows, values, strict=True)
                    ],
                },
                showlegend=False,
            ),
            row=1,
            col=col,
        )
        winners = [i for i, r in enumerate(rows) if _ab_winner(r, flag)]
        if winners:
            fig.add_trace(
                go.Scatter(
                    x=[[x[0][i] for i in winners], [x[1][i] for i in winners]],
                    y=[values[i] for i in winners],
                    mode="markers+text",
                    marker={"size": 18, "symbol": "star", "color": "#d4ac0d"},
                    text=["winner"] * len(winners),
                    textposition="middle right",
                    name="winner (the verdict names it)",
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
        fig.update_yaxes(tickformat=".1%", rangemode="tozero", row=1, col=col)
    table = _table(
        "table-ab",
        [
            _text("Trigger", "trigger"),
            _text("Step", "step"),
            _text("Variant", "variant"),
            _text("Verdict", "verdict", lambda v: AB_VERDICTS.get(str(v), str(v))),
            _Column("Click winner", "is_click_winner", _winner_cell("is_click_winner")),
            _Column(
                "Conversion winner", "is_conversion_winner", _winner_cell("is_conversion_winner")
            ),
            _num("Sent", "sent"),
            _num("Clicked", "clicked"),
            _num("Click rate", "click_rate", _pct),
            _num("95% CI low", "click_rate_ci_low", _pct),
            _num("95% CI high", "click_rate_ci_high", _pct),
            _num("Conversions", "conversions"),
            _num("Conversion rate", "conversion_rate", _pct),
            _num("95% CI low", "conversion_rate_ci_low", _pct),
            _num("95% CI high", "conversion_rate_ci_high", _pct),
        ],
        rows,
    )
    return _chart(fig, "chart-ab", 420) + table


def _winner_cell(flag: str) -> Callable[[Row], _Cell]:
    # The model's raw flag stays in data-value; the mark shows only when the verdict names a
    # winner (a flag on too small a sample is noise).
    def cell(row: Row) -> _Cell:
        marked = _ab_winner(row, flag)
        return _Cell("\u2605 winner" if marked else "", row[flag], css="winner" if marked else "")

    return cell


def _ab_winner(row: Row, flag: str) -> bool:
    return bool(row[flag]) and _verdict_names_winner(row["verdict"])


def _deliverability_section(data: _Data) -> str:
    missing = _unavailable(data, "deliverability")
    if missing:
        return _empty(missing)
    rows = data.rows["deliverability"]
    metrics = (
        ("complaint_rate", "complaint_rate_limit", "is_complaint_rate_over_limit", ".2%"),
        ("hard_bounce_rate", "hard_bounce_rate_limit", "is_hard_bounce_rate_over_limit", ".1%"),
    )
    # Axis titles, not subplot titles: those would sit where the legend is, above the plot.
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1)
    providers = sorted({str(r["provider"]) for r in rows})
    palette = ("#2e86c1", "#8e44ad", "#16a085", "#d35400", "#7f8c8d", "#2c3e50")
    days = sorted({r["sent_on"] for r in rows})
    over_in_legend = False
    for line, (metric, limit, over, tickformat) in enumerate(metrics, start=1):
        title = metric.replace("_", " ").replace("hard bounce", "hard-bounce")
        for n, provider in enumerate(providers):
            mine = [r for r in rows if str(r["provider"]) == provider]
            fig.add_trace(
                go.Scatter(
                    x=[r["sent_on"].isoformat() for r in mine],
                    y=[float(r[metric]) if r[metric] is not None else None for r in mine],
                    mode="lines+markers",
                    name=_label(provider),
                    legendgroup=_label(provider),
                    showlegend=line == 1,
                    line={"color": palette[n % len(palette)]},
                ),
                row=line,
                col=1,
            )
        overs = [r for r in rows if r[over]]
        if overs:
            fig.add_trace(
                go.Scatter(
                    x=[r["sent_on"].isoformat() for r in overs],
                    y=[float(r[metric]) for r in overs],
                    mode="markers",
                    marker={
                        "size": 14,
                        "symbol": "circle-open",
                        "color": "#c0392b",
                        "line": {"width": 2},
                    },
                    name="over the limit",
                    legendgroup="over",
                    showlegend=not over_in_legend,
                ),
                row=line,
                col=1,
            )
            over_in_legend = True
        _limit_line(fig, rows, days, limit, line)
        fig.update_yaxes(
            title={"text": title}, tickformat=tickformat, rangemode="tozero", row=line, col=1
        )
    fig.update_xaxes(**_date_axis(days))
    table = _table(
        "table-deliverability",
        [
            _text("Provider", "provider"),
            _text("Day", "sent_on", _day),
            _num("Sent", "sent"),
            _Column(
                "Complaint rate",
                "complaint_rate",
                _rate_against_limit("complaint_rate", "is_complaint_rate_over_limit"),
            ),
            _num("Limit", "complaint_rate_limit", _pct),
            _Column(
                "Hard-bounce rate",
                "hard_bounce_rate",
                _rate_against_limit("hard_bounce_rate", "is_hard_bounce_rate_over_limit"),
            ),
            _num("Limit", "hard_bounce_rate_limit", _pct),
            _num("Open rate (people)", "open_rate", _pct),
            _num("Click rate", "click_rate", _pct),
            _num("Delivered", "delivered"),
            _num("Hard bounced", "hard_bounced"),
            _num("Soft bounced", "soft_bounced"),
            _num("Complained", "complained"),
            _num("Unsubscribed", "unsubscribed"),
            _num("Opened (people)", "opened"),
            _num("Clicked", "clicked"),
        ],
        rows,
    )
    return _chart(fig, "chart-deliverability", 560) + table


def _rate_against_limit(field: str, flag: str) -> Callable[[Row], _Cell]:
    def cell(row: Row) -> _Cell:
        rate = row[field]
        if rate is None:
            return _Cell(BLANK)
        if not row[flag]:
            return _Cell(_pct(rate), rate, numeric=True)
        return _Cell(f"{_pct(rate)} over the limit", rate, numeric=True, css="over")

    return cell


def _limit_line(fig: go.Figure, rows: list[Row], days: list[date], column: str, line: int) -> None:
    """The guard's limit: a straight line when it held all range, else its value per day."""
    per_day = {r["sent_on"]: float(r[column]) for r in rows if r[column] is not None}
    if not per_day:
        return
    values = set(per_day.values())
    if len(values) == 1:
        value = values.pop()
        fig.add_hline(
            y=value,
            line_dash="dash",
            line_color="#c0392b",
            annotation_text=f"limit {_pct(value)}",
            annotation_position="top left",
            row=line,
            col=1,
        )
        return
    fig.add_trace(
        go.Scatter(
            x=[d.isoformat() for d in days if d in per_day],
            y=[per_day[d] for d in days if d in per_day],
            mode="lines",
            line={"dash": "dash", "color": "#c0392b"},
            name="limit",
            showlegend=False,
        ),
        row=line,
        col=1,
    )


# -- the page ------------------------------------------------------------------------------------

_SECTIONS: tuple[tuple[str, str, str, Callable[[_Data], str]], ...] = (
    (
        "sends",
        "Emails sent per day",
        "Emails the providers accepted per UTC day, stacked by trigger (holdouts are not sends).",
        _sends_section,
    ),
    (
        "funnel",
        "Funnel per trigger and step",
        "Of the emails sent in the range: delivered, opened by a person (machine opens such as "
        "Apple Mail Privacy Protection do not count), clicked and converted, summed over the "
        "range.",
        _funnel_section,
    ),
    (
        "lift",
        "Holdout lift",
        "Conversion rate of the recipients minus that of the holdout, with its 95% confidence "
        "interval: an interval that crosses the dashed zero line is not a proven effect. "
        "Computed over all sends up to the last tick: the date range does not apply here.",
        _lift_section,
    ),
    (
        "ab",
        "A/B variants per step",
        "Click and conversion rates per variant with their 95% confidence intervals; a winner "
        "is marked only when the step's verdict names one. Computed over all sends up to the "
        "last tick: the date range does not apply here.",
        _ab_section,
    ),
    (
        "deliverability",
        "Deliverability per provider",
        "Complaint and hard-bounce rates per provider and UTC day against the limits the "
        "deliverability guard holds marketing at (dashed lines; Gmail's 0.3% for complaints).",
        _deliverability_section,
    ),
)


def _page(data: _Data, warehouse: str, now: datetime) -> str:
    span = f"{data.date_from} to {data.date_to}"
    last = f"{data.last_day} (the newest day with sends)" if data.last_day else "unknown (no sends)"
    written = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = "".join(
        f'<section id="{anchor}"><h2>{html.escape(title)}</h2>'
        f'<p class="note">{html.escape(note)}</p>{render(data)}</section>'
        for anchor, title, note, render in _SECTIONS
    )
    nav = "".join(
        f'<a href="#{anchor}">{html.escape(title)}</a>' for anchor, title, _, _ in _SECTIONS
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>nudge report {html.escape(span)}</title>"
        f"<style>{_CSS}</style>"
        # plotly.js once, inline: the file works offline and the figures below only call it.
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body>"
        "<header><h1>nudge report</h1>"
        f'<p class="meta">Sends of <strong>{html.escape(span)}</strong> (UTC days) · '
        f"last tick: {html.escape(last)} · written {html.escape(written)} · "
        f"warehouse <code>{html.escape(warehouse)}</code></p>"
        f"<nav>{nav}</nav></header>"
        f"{sections}</body></html>\n"
    )


def last_tick(warehouse: Path | Settings) -> datetime:
    """The instant of the latest tick recorded in ``warehouse`` (nudge.runs)."""
    settings = _settings(warehouse)
    with _open(settings) as con:
        try:
            found = con.execute(sql_for(con, "reports/last_tick")).fetchone()
        except MISSING_RELATION_ERRORS:
            found = None
    if not found or found[0] is None:
        raise ConfigError(
            f"no tick has run on {settings.warehouse_setting} yet: run `nudge run` first"
        )
    as_of: datetime = found[0]
    return as_of.astimezone(UTC)
