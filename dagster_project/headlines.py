"""The reporting models' headline figures as Markdown tables, for Dagster's asset metadata.

A marketer opening the reporting assets in ``dagster dev`` sees per trigger what was sent and
earned, the lift verdicts, the A/B results and the deliverability rates without writing SQL.
Aggregates only: no customer or address ever reaches the metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dagster import MetadataValue

from .warehouse import MISSING_RELATION_ERRORS, Connection, sql_for

Format = Callable[[Any], str]


def percent(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{float(value) * 100:.{digits}f} %"


def count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def money(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.2f}"


def text(value: Any) -> str:
    # A YAML-named trigger could hold a "|" or a newline and break the table around it.
    return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], formats: Sequence[Format]
) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(f(v) for f, v in zip(formats, row, strict=True)) + " |")
    return "\n".join(lines)


def _rows(con: Connection, name: str) -> list[tuple[Any, ...]] | None:
    try:
        return con.execute(sql_for(con, f"reports/{name}")).fetchall()
    except MISSING_RELATION_ERRORS:
        return None  # not built yet


def headline_metadata(con: Connection) -> dict[str, dict[str, Any]]:
    """Per reporting model, the metadata entries to attach to its materialization."""
    found: dict[str, dict[str, Any]] = {}
    triggers = _rows(con, "headline_triggers")
    if triggers is not None:
        revenue: dict[str, list[str]] = {}
        for trigger, currency, amount in _rows(con, "headline_revenue") or []:
            revenue.setdefault(trigger, []).append(f"{text(currency)} {money(amount)}")
        table = markdown_table(
            [
                "trigger",
                "sent",
                "delivered",
                "opened",
                "clicked",
                "unsubscribed",
                "conversions",
                "conversion rate",
                "revenue",
            ],
            [(*row, ", ".join(revenue.get(row[0], [])) or None) for row in triggers],
            [text, count, percent, percent, percent, percent, count, percent, text],
        )
        found["rpt_trigger_daily"] = {
            "headline": MetadataValue.md(table),
            "sent": sum(int(row[1]) for row in triggers),
            "conversions": sum(int(row[6]) for row in triggers),
        }
    lift = _rows(con, "headline_lift")
    if lift is not None:
        found["rpt_holdout_lift"] = {
            "headline": MetadataValue.md(
                markdown_table(
                    [
                        "experiment",
                        "treatment",
                        "holdout",
                        "treatment rate",
                        "holdout rate",
                        "lift",
                        "95 % CI low",
                        "95 % CI high",
                        "p-value",
                        "verdict",
                    ],
                    lift,
                    [
                        text,
                        count,
                        count,
                        percent,
                        percent,
                        percent,
                        percent,
                        percent,
                        lambda p: "-" if p is None else f"{float(p):.3f}",
                        text,
                    ],
                )
            ),
            "significant_experiments": sum(
                1 for row in lift if row[-1] in ("positive", "negative")
            ),
        }
    ab = _rows(con, "headline_ab")
    if ab is not None:
        found["rpt_ab_results"] = {
            "headline": MetadataValue.md(
                markdown_table(
                    [
                        "trigger",
                        "step",
                        "variant",
                        "sent",
                        "click rate",
                        "conversion rate",
                        "verdict",
                    ],
                    ab,
                    [text, text, text, count, percent, percent, text],
                )
            )
        }
    deliverability = _rows(con, "headline_deliverability")
    if deliverability is not None:
        found["rpt_deliverability"] = {
            "headline": MetadataValue.md(
                markdown_table(
                    [
                        "provider",
                        "day",
                        "sent",
                        "hard bounce rate",
                        "complaint rate",
                        "over a limit",
                    ],
                    deliverability,
                    [
                        text,
                        text,
                        count,
                        lambda v: percent(v, 2),
                        lambda v: percent(v, 2),
                        lambda v: "yes" if v else "no",
                    ],
                )
            ),
            "days_over_a_limit": sum(1 for row in deliverability if row[-1]),
        }
    return found
