"""The operator commands that need no dbt run: init and resolve-unknown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagster_project.cli import main
from dagster_project.warehouse import connect
from tests.support.factories import AS_OF, CART_SPEC, cart_row, ledger_rows, write_eligibility
from tests.support.ledger_steps import hand_over, plan, resume


@pytest.fixture
def with_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A warehouse where a run died with three sends in flight through SendGrid."""
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("NUDGE_WAREHOUSE", str(warehouse))
    assert main(["init"]) == 0
    con = connect(warehouse)
    ids = _died_with_sends_in_flight(con, ("a", "b", "c", "d"), in_flight=3)
    con.close()
    return warehouse, ids


def _died_with_sends_in_flight(con: Any, keys: tuple[str, ...], *, in_flight: int) -> list[str]:
    """Plan a cart per key; a run hands the first ``in_flight`` to SendGrid (no idempotency
    keys) and dies; the next run resumes them as unknown. Returns their send_ids."""
    write_eligibility(con, [cart_row(k) for k in keys])
    plan(con, eligibility=CART_SPEC.relation, run_id="dead", as_of=AS_OF, provider="sg")
    ids = [cart_row(k)["send_id"] for k in keys[:in_flight]]
    hand_over(con, run_id="dead", trigger="abandoned_cart", send_ids=ids, key="k1")
    resume(
        con,
        trigger="abandoned_cart",
        eligibility=CART_SPEC.relation,
        run_id="next",
        as_of=AS_OF,
        provider="sg",
        idempotent=False,
    )
    return ids


def _statuses(warehouse: Path) -> dict[str, str]:
    con = connect(warehouse)
    try:
        return {k: v[0] for k, v in ledger_rows(con).items()}
    finally:
        con.close()


def test_resolve_unknown_lists_then_resends_or_drops(with_unknown, capsys) -> None:
    warehouse, ids = with_unknown
    assert main(["resolve-unknown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 unknown sends")
    assert all(i in out for i in ids) and "cust_a" in out and "via sg" in out

    assert main(["resolve-unknown", "--drop", "--send-id", ids[0]]) == 0
    assert "1 sends dropped" in capsys.readouterr().out
    assert main(["resolve-unknown", "--resend", "--trigger", "abandoned_cart"]) == 0
    assert "2 sends will be resent" in capsys.readouterr().out
    statuses = _statuses(warehouse)
    assert statuses[ids[0]] == "skipped"
    assert statuses[ids[1]] == statuses[ids[2]] == "failed_retryable"
    assert main(["resolve-unknown"]) == 0
    assert capsys.readouterr().out.startswith("0 unknown sends")
    # Both decisions are in the audit trail: what, on which sends, by whom.
    con = connect(warehouse)
    try:
        audit = con.execute(
            "select action, actor, detail from nudge.audit_log order by occurred_at"
        ).fetchall()
    finally:
        con.close()
    assert [a for a, _, _ in audit] == ["resolve_unknown_drop", "resolve_unknown_resend"]
    assert all(actor.startswith("cli:") for _, actor, _ in audit)
    assert ids[0] in audit[0][2] and ids[1] in audit[1][2]


def test_resolve_unknown_refuses_send_ids_that_are_not_unknown(with_unknown, capsys) -> None:
    warehouse, _ = with_unknown
    planned = cart_row("d")["send_id"]
    assert main(["resolve-unknown", "--resend", "--send-id", planned]) == 2
    assert f"not unknown sends: {planned}" in capsys.readouterr().err
    assert set(_statuses(warehouse).values()) == {"unknown", "planned"}


def test_resend_and_drop_are_exclusive(with_unknown) -> None:
    with pytest.raises(SystemExit):
        main(["resolve-unknown", "--resend", "--drop"])


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from dagster_project.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert set(commands) == {
        "run",
        "demo",
        "report",
        "preview",
        "render",
        "backtest",
        "resolve-unknown",
        "serve",
        "erase",
        "export",
        "why",
        "init",
        "dev",
    }
    for command in commands:
        assert f"\n  {command} " in text, command


def test_init_and_resolve_unknown_on_postgresql(
    postgres_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    database = postgres_cluster.new_database("cli")
    monkeypatch.setenv(
        "NUDGE_WAREHOUSE",
        f"postgresql://{database.user}@{database.host}:{database.port}/{database.dbname}",
    )
    monkeypatch.setenv("DBT_ENV_SECRET_NUDGE_PG_PASSWORD", database.password)
    assert main(["init"]) == 0
    assert "(applied 001_ledger_events_runs" in capsys.readouterr().out
    assert main(["init"]) == 0
    assert "(up to date)" in capsys.readouterr().out
    # A run died with two sends in flight through a provider without idempotency keys.
    con = database.warehouse(tmp_path / "state")
    try:
        ids = _died_with_sends_in_flight(con, ("a", "b"), in_flight=2)
        assert {s for s, _, _ in ledger_rows(con).values()} == {"unknown"}
    finally:
        con.close()
    assert main(["resolve-unknown", "--drop", "--send-id", ids[0]]) == 0
    con = database.warehouse(tmp_path / "state")
    try:
        assert {k: v[0] for k, v in ledger_rows(con).items()} == {
            ids[0]: "skipped",
            ids[1]: "unknown",
        }
    finally:
        con.close()
