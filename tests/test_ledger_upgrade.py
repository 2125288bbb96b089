"""A warehouse whose ledger was written before sequences existed keeps working: the new columns
are added, old sends are backfilled, and the frequency cap counts them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from dagster_project import ledger
from dagster_project.warehouse import connect
from tests.support.factories import AS_OF, CART_SPEC, cart_row, write_eligibility
from tests.support.mirrors import send_id

# nudge.send_ledger as the single-step release created it (before issue 4).
OLD_LEDGER = """
create schema nudge;
create table nudge.send_ledger (
    send_id varchar primary key, trigger varchar not null, trigger_key varchar not null,
    step varchar not null, customer_id varchar not null, email varchar,
    status varchar not null, provider varchar, provider_message_id varchar,
    attempts integer not null default 0, error varchar, run_id varchar, as_of timestamptz,
    due_at timestamptz, expires_at timestamptz, context json, planned_at timestamptz not null,
    sending_at timestamptz, settled_at timestamptz, updated_at timestamptz not null,
    batch_id varchar, next_attempt_at timestamptz, reason varchar
);
"""


def test_an_old_ledger_is_upgraded_and_its_sends_count_toward_the_cap(tmp_path: Path) -> None:
    con = connect(tmp_path / "w.duckdb")
    con.execute(OLD_LEDGER)
    context = {"category": "marketing", "entered_at": (AS_OF - timedelta(days=90)).isoformat()}
    con.execute(
        """
        insert into nudge.send_ledger (send_id, trigger, trigger_key, step, customer_id, status,
            as_of, context, planned_at, updated_at)
        values ('old', 'inactivity', 'cust_k1:x', 'we_miss_you', 'cust_k1', 'sent', ?, ?,
            now(), now())
        """,
        [AS_OF - timedelta(hours=3), json.dumps(context)],
    )
    ledger.ensure_ledger(con)
    assert con.execute(
        "select category, entered_at, sent_as_of from nudge.send_ledger where send_id = 'old'"
    ).fetchall() == [
        ("marketing", AS_OF - timedelta(days=90), AS_OF - timedelta(hours=3)),
    ]
    # A new marketing step for the same customer three hours later waits for the cap.
    write_eligibility(con, [cart_row("k1")])
    with ledger.planning(
        con, eligibility=CART_SPEC.relation, run_id="r1", as_of=AS_OF, provider="outbox"
    ) as decision:
        pass
    assert (decision.planned, decision.deferred) == (0, 1)
    assert con.execute(
        "select status, reason from nudge.send_ledger where trigger = 'abandoned_cart'"
    ).fetchall() == [("deferred", "frequency_cap_24h")]


def test_inactivity_sends_are_not_repeated_by_win_back(tmp_path: Path) -> None:
    con = connect(tmp_path / "w.duckdb")
    con.execute(OLD_LEDGER)
    for old_id, key, status in (("s1", "c1:20260301T100000", "sent"), ("s2", "c2:x", "failed")):
        con.execute(
            """
            insert into nudge.send_ledger (send_id, trigger, trigger_key, step, customer_id,
                status, as_of, context, planned_at, updated_at)
            values (?, 'inactivity', ?, 'we_miss_you', ?, ?, ?, '{}', now(), now())
            """,
            [old_id, key, key.split(":")[0], status, AS_OF],
        )
    ledger.ensure_ledger(con)
    ledger.ensure_ledger(con)  # idempotent
    migrated = con.execute(
        "select send_id, trigger_key, status, reason from nudge.send_ledger "
        "where trigger = 'win_back'"
    ).fetchall()
    # Only the email that went out is carried over, under win_back's own send_id.
    assert migrated == [
        (
            send_id("win_back", "c1:20260301T100000", "we_miss_you"),
            "c1:20260301T100000",
            "skipped",
            "sent_before_upgrade",
        )
    ]
    assert con.execute(
        "select count(*) from nudge.send_events where trigger = 'win_back'"
    ).fetchall() == [(1,)]
