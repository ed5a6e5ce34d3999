"""Medians over several `bench.py --json` runs, as the Markdown table docs/benchmarks.md shows.

    .venv/bin/python bench/summarize.py run1.json run2.json run3.json

One run on a shared 2-core machine is noise; the median of three is what we quote, with the
spread beside it so a reader sees how noisy each figure was.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench.stats import TARGETS, fmt, unit_of  # noqa: E402


def load(paths: list[Path]) -> list[dict[str, float]]:
    runs = []
    for path in paths:
        report = json.loads(path.read_text())
        if report.get("meta", {}).get("quick"):
            print(
                f"warning: {path} is a --quick run; its figures are not comparable", file=sys.stderr
            )
        runs.append(report["metrics"])
    return runs


def markdown(runs: list[dict[str, float]]) -> str:
    names = list(dict.fromkeys(name for run in runs for name in run))
    lines = [
        "| metric | median | min..max | unit | target | met |",
        "|---|---:|---:|---|---|---|",
    ]
    for name in names:
        values = [run[name] for run in runs if name in run]
        median = statistics.median(values)
        target = TARGETS.get(name)
        met = ("yes" if target.met(median) else "**no**") if target else ""
        lines.append(
            f"| `{name}` | {fmt(median)} | {fmt(min(values))}..{fmt(max(values))} "
            f"| {unit_of(name)} | {target.text if target else ''} | {met} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: summarize.py RUN.json [RUN.json ...]", file=sys.stderr)
        return 2
    print(markdown(load([Path(a) for a in argv])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
