"""What ``nudge demo`` prints about the sequences' progress, from the ledger, the same on both
engines: per step what happened, and the entries that received two or more steps, each step at
the tick that sent it, in UTC whatever the session's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dagster_project.demo import format_progress

MONDAY = datetime(2026, 6, 1, 9, tzinfo=UTC)  # a Monday, 09:00 UTC

# (send_id, trigger, trigger_key, step, step_index, status, sent at hours after MONDAY)
ROWS = [
    ("s1", "welcome", "w1", "hello", 0, "sent", 0),
    ("s2", "welcome", "w1", "tips", 1, "sent", 25),
    ("s3", "welcome", "w1", "offer", 2, "sent", 49),
    # Written out of order: the timeline follows step_index.
    ("s5", "abandoned_cart", "c1:1", "second_reminder", 1, "sent", 24),
    ("s4", "abandoned_cart", "c1:1", "reminder", 0, "sent", 1),
    ("s6", "abandoned_cart", "c2:1", "reminder", 0, "sent", 1),
    ("s7", "abandoned_cart", "c2:1", "second_reminder", 1, "holdout", None),
    ("s8", "abandoned_cart", "c3:1", "reminder", 0, "sent", 2),
    ("s9", "abandoned_cart", "c3:1", "second_reminder", 1, "sent", 26),
    ("s10", "win_back", "b1", "we_miss_you", 0, "sent", 3),
]


def _fill(con: Any) -> None:
    for send_id, trigger, key, step, index, status, hours in ROWS:
        sent_as_of = MONDAY + timedelta(hours=hours) if hours is not None else None
        as_of = sent_as_of or MONDAY
        con.execute(
            "insert into nudge.send_ledger (send_id, trigger, trigger_key, step, step_index,"
            " customer_id, status, attempts, as_of, sent_as_of, context, planned_at,"
            " updated_at) values (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, '{}', ?, ?)",
            [
                send_id,
                trigger,
                key,
                step,
                index,
                f"cust-{key}",
                status,
                as_of,
                sent_as_of,
                as_of,
                as_of,
            ],
        )


def test_the_progress_shows_each_steps_outcome_and_the_longest_timelines_in_utc(
    engine_con: Any,
) -> None:
    _fill(engine_con)
    # A session in another zone: the times still print in UTC, as the line says.
    engine_con.execute("set TimeZone = 'America/New_York'")

    out = format_progress(engine_con, examples=2)

    assert "  abandoned_cart/second_reminder" in out
    second = next(line for line in out.splitlines() if "abandoned_cart/second_reminder" in line)
    assert second.split()[1:4] == ["sent", "2", "holdout"] and second.split()[4] == "1"
    # Three entries got two or more sends (c2:1's second step was held out); the longest
    # first, then by trigger and key; two examples asked for.
    assert "\n3 entries received two or more steps, for example:" in out
    examples = out[out.index("for example:") :].splitlines()[1:]
    assert examples == [
        "  welcome w1: hello Mon 09:00 -> tips Tue 10:00 -> offer Wed 10:00 (UTC)",
        "  abandoned_cart c1:1: reminder Mon 10:00 -> second_reminder Tue 09:00 (UTC)",
    ]
