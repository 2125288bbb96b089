"""The push bench runs end to end at a small size: every lane's messages reach the sink once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import bench_push, summary
from tests.support.fast_sink import FastSink


def test_the_push_bench_prints_every_lane_and_checks_exactly_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    summary_file = tmp_path / "summary.jsonl"
    sizes = ["--sends", "120", "--repeat", "1", "--latency-ms", "5", "--latency-sends", "40"]
    bench_push.main([*sizes, "--summary", str(summary_file)])
    table = capsys.readouterr().out
    for lane in bench_push.LANES:
        assert f"| nudge, {lane.label}, 120 carts, best of 1 |" in table
    for lane in bench_push.LANES[::2]:
        assert f"| nudge, {lane.label}, 40 carts, 5 ms round trip |" in table
    for label in bench_push._ceiling_labels(8):
        assert f"| nudge, {label}, 120 carts, best of 1 |" in table
    assert "| nudge rendering alone, one process |" in table
    assert "| nudge rendering, 2 worker processes |" in table
    assert table.count("drt 1.2 SendGrid destination (baseline)") == 2
    # The headline figures went to the summary: every lane of both settings, the HTTP client's
    # two ceilings and rendering.
    figures = summary.read(summary_file)
    assert len(figures) == len(bench_push.LANES) + 2 + len(bench_push.LANES[::2]) + 2
    assert {f.bench for f in figures} == {"push"}
    assert all(f.value > 0 for f in figures)


def test_the_summary_is_one_table_with_each_figure_beside_its_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.jsonl"
    tick = summary.Figure("tick", "tick, 1,000 customers", 12.0, "s", "scan", 0.00125)
    summary.record(path, tick)
    summary.record(path, summary.Figure("push", "render", 8123.4, "emails/s"))
    summary.record(None, summary.Figure("push", "not recorded", 1.0, "s"))
    assert summary.main([str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == "| tick | tick, 1,000 customers | 12.00 s | scan: 0.00125 s | 9600.00x |"
    assert lines[-1] == "| push | render | 8,123 emails/s |  |  |"
    with pytest.raises(SystemExit, match="no figures"):
        summary.main([str(tmp_path / "missing.jsonl")])


def test_the_sink_counts_each_dialects_messages_and_the_bench_notices_a_loss() -> None:
    with FastSink() as sink:
        provider = bench_push.LANES[2].build(sink.url, 2)  # Postmark
        try:
            from tests.support.factories import make_message

            results = provider.send([make_message(n) for n in (1, 2, 3)])
        finally:
            provider.close()
        assert [r.status for r in results] == ["sent"] * 3
        assert sink.stats() == {"requests": 1, "messages": 3, "distinct": 3}
        # Four expected, three arrived: the bench refuses to print a figure.
        with pytest.raises(SystemExit, match="got 3 messages, 3 distinct, of 4"):
            bench_push._check(sink, {"messages": 0, "distinct": 0}, 4, "postmark")
