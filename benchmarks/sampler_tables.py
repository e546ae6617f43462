"""One table per sampler from the `skipdit bench` runs of benchmarks/sampler_bench.sh: a row per method, a column
group per step count (measured speed-up, ideal speed-up, PSNR against uncached), then the frontier gap of each run.

    python benchmarks/sampler_tables.py bench-samplers > tables.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from skipdit.bench.harness import Row
from skipdit.bench.report import frontier_gaps

RUN = re.compile(r"(?P<sampler>.+)-(?P<steps>\d+)")


def read_runs(folder: Path) -> dict[str, dict[int, list[Row]]]:
    """sampler -> steps -> the rows of that run's bench.json."""
    runs: dict[str, dict[int, list[Row]]] = {}
    for path in sorted(folder.glob("*/bench.json")):
        match = RUN.fullmatch(path.parent.name)
        if match:
            rows = [Row(**row) for row in json.loads(path.read_text())["rows"]]
            runs.setdefault(match["sampler"], {})[int(match["steps"])] = rows
    return runs


def cell(row: Row | None) -> str:
    if row is None:
        return "— | — | —"
    psnr = "—" if row.psnr is None else f"{row.psnr:.1f}"
    return f"{row.measured:.2f}× | {row.ideal:.2f}× | {psnr}"


def table(sampler: str, by_steps: dict[int, list[Row]]) -> str:
    steps = sorted(by_steps)
    methods = list(dict.fromkeys(r.method for n in steps for r in by_steps[n] if r.family != "none"))
    head = "| method | " + " | ".join(f"{n} steps: measured | ideal | PSNR (dB)" for n in steps) + " |"
    lines = [f"**{sampler}**", "", head, "|---|" + "---|---|---|" * len(steps)]
    for method in methods:
        found = [next((r for r in by_steps[n] if r.method == method), None) for n in steps]
        lines.append(f"| {method} | " + " | ".join(cell(r) for r in found) + " |")
    lines.append("")
    for n in steps:
        for x in ("measured", "ideal"):
            gaps = frontier_gaps(by_steps[n], x)
            lines.append(f"- {n} steps, at equal {x} speed-up: " + "; ".join(gaps))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the OUT_DIR of benchmarks/sampler_bench.sh")
    args = parser.parse_args()
    runs = read_runs(args.folder)
    print("\n\n".join(table(sampler, by_steps) for sampler, by_steps in runs.items()))


if __name__ == "__main__":
    main()
