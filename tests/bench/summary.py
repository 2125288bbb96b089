"""One table for ``make bench``: ``python -m tests.bench.summary FILE``.

Each bench prints its own detailed report, and with ``--summary FILE`` also appends its
headline figures to ``FILE`` (one JSON object per line), each beside the baseline it was
measured against in the same run. This prints them as one Markdown table, so the figures that
matter are read (and pasted into notes) in one place. Ratios, not absolute numbers, are what
compare across machines: the baseline shared the machine's noise.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    bench: str
    figure: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None


def record(path: Path | None, figure: Figure) -> None:
    """Append one headline figure to ``path`` (nothing when no summary file was asked for)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(asdict(figure)) + "\n")


def _number(value: float, unit: str) -> str:
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1 or value == 0:
        text = f"{value:,.2f}"
    else:
        text = f"{value:.3g}"  # a bare scan of a small warehouse takes milliseconds
    return f"{text} {unit}".strip()


def table(figures: Sequence[Figure]) -> str:
    lines = [
        "| bench | figure | value | baseline (same run) | value / baseline |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        if f.baseline is not None and f.baseline_value:
            baseline = f"{f.baseline}: {_number(f.baseline_value, f.unit)}"
            ratio = f"{f.value / f.baseline_value:.2f}x"
        else:
            baseline, ratio = "", ""
        lines.append(
            f"| {f.bench} | {f.figure} | {_number(f.value, f.unit)} | {baseline} | {ratio} |"
        )
    return "\n".join(lines)


def read(path: Path) -> list[Figure]:
    if not path.exists():
        return []
    return [
        Figure(**json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.summary", description=__doc__)
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    figures = read(args.file)
    if not figures:
        raise SystemExit(f"no figures in {args.file}: run the benches with --summary first")
    print("\n### make bench: the headline figures\n")
    print(table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
