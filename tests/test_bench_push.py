"""The push bench runs end to end at a small size: every lane's messages reach the sink once."""

from __future__ import annotations

import pytest

from tests.bench import bench_push
from tests.support.fast_sink import FastSink


def test_the_push_bench_prints_every_lane_and_checks_exactly_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench_push.main(
        ["--sends", "120", "--repeat", "1", "--latency-ms", "5", "--latency-sends", "40"]
    )
    table = capsys.readouterr().out
    for lane in bench_push.LANES:
        assert f"| nudge, {lane.label}, 120 carts, best of 1 |" in table
    for lane in bench_push.LANES[::2]:
        assert f"| nudge, {lane.label}, 40 carts, 5 ms round trip |" in table
    assert "| nudge rendering alone, one process |" in table
    assert table.count("drt 1.2 SendGrid destination (baseline)") == 2


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
