"""The hand-over journal's lines read back as written: every field of every event, whatever
the text in them (``handover.py`` encodes what a line's rows share once, then each send)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from dagster_project import handover
from dagster_project.handover import HandoverJournal
from dagster_project.providers import SendResult

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_every_event_reads_back_with_every_field(tmp_path: Path) -> None:
    results = [
        SendResult(send_id="s1", status="sent", provider_message_id='id "1" \u00e9', attempts=2),
        SendResult(
            send_id="s2",
            status="failed",
            error='HTTP 400: bad "From"\n\u2014 line two',
            attempts=1,
            retryable=True,
        ),
    ]
    journal = HandoverJournal(tmp_path, run_id="run-1", trigger="welcome", as_of=AS_OF)
    journal.handing_over(["s1", "s2", 's"3'], "key-\u00e9")
    journal.answered(results)
    journal.returned(['s"3'])
    journal.close(discard=False)

    frame, files = handover.read(tmp_path, "welcome", as_of=AS_OF)
    assert files == [journal.path]
    rows = frame.sort("journal_order").to_dicts()
    assert [(r["seq"], r["event"], r["send_id"]) for r in rows] == [
        (1, "handed_over", "s1"),
        (1, "handed_over", "s2"),
        (1, "handed_over", 's"3'),
        (2, "answered", "s1"),
        (2, "answered", "s2"),
        (3, "returned", 's"3'),
    ]
    for row in rows:
        assert (row["run_id"], row["trigger"], row["as_of"]) == ("run-1", "welcome", AS_OF)
        assert row["recorded_at"] is not None
    assert {r["request_key"] for r in rows if r["event"] == "handed_over"} == {"key-\u00e9"}
    assert {r["request_key"] for r in rows if r["event"] != "handed_over"} == {None}
    answered = {r["send_id"]: r for r in rows if r["event"] == "answered"}
    for result in results:
        row = answered[result.send_id]
        assert (
            row["status"],
            row["provider_message_id"],
            row["error"],
            row["attempts"],
            row["retryable"],
        ) == (
            result.status,
            result.provider_message_id,
            result.error,
            result.attempts,
            result.retryable,
        )
    assert all(r["status"] is None for r in rows if r["event"] != "answered")
    # One line per send and event: a line break inside an error stays escaped.
    assert len(journal.path.read_text().splitlines()) == 6
