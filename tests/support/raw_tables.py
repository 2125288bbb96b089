"""A hand-planted warehouse for end-to-end tests: the input contract's three raw tables, and a
time zone that keeps a test's ticks out of quiet hours whenever the suite runs."""

from __future__ import annotations

from datetime import datetime

import duckdb


def create_raw_tables(con: duckdb.DuckDBPyConnection) -> None:
    """``raw.customers``, ``raw.events`` and ``raw.subscriptions``, empty."""
    con.execute("create schema raw")
    con.execute(
        "create table raw.customers (customer_id varchar, email varchar, first_name varchar,"
        " timezone varchar, birthday date, created_at timestamptz)"
    )
    con.execute(
        "create table raw.events (event_id varchar, customer_id varchar, event_name varchar,"
        " occurred_at timestamptz, properties json)"
    )
    con.execute(
        "create table raw.subscriptions (customer_id varchar, list varchar, status varchar,"
        " changed_at timestamptz)"
    )


def daytime_zone(tick: datetime) -> str:
    """A time zone where ``tick`` (and every tick a whole number of days from it) falls at noon
    local time."""
    offset = (12 - tick.hour) % 24
    offset = offset - 24 if offset > 14 else offset
    # POSIX names: Etc/GMT-3 is UTC+3.
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"
