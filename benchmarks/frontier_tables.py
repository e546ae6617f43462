"""The tables of docs/benchmarks.md "The fidelity frontier" from the runs of benchmarks/frontier.sh: the gap between
the best of ours and the best peer at 1.5x, 2x and 2.5x (measured and by counted MACs), the fastest row of each side
at 30 dB or more, then each method's front (speed-up -> PSNR) per run.

    python benchmarks/frontier_tables.py bench-frontier > tables.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from skipdit.bench.harness import Row
from skipdit.bench.report import OURS, family_front, frontier_pairs

RUNS = {"deep-ddim50": "deep twins, DDIM-50", "deep-dpm20": "deep twins, DPM-Solver++ 20",
        "shallow-ddim50": "8-block twins, DDIM-50", "shallow-dpm20": "8-block twins, DPM-Solver++ 20"}
FLOOR = 30.0  # dB: the issue's fidelity floor for the fastest row


def read_rows(path: Path) -> list[Row]:
    return [Row(**row) for row in json.loads(path.read_text())["rows"]]


def short(row: Row) -> str:
    """The method in a few words: the tuned masks by their letter count instead of the letters."""
    setting = row.setting
    if "mask=" in setting:
        head, _, mask = setting.partition("mask=")
        setting = f"{head}mask of {mask.count('F')} F / {mask.count('C')} C / {mask.count('R')} R"
    return f"{row.family} {setting}"


def gap_cell(ours: Row | None, peer: Row | None, x: str) -> str:
    if ours is None or peer is None:
        return "—"
    return (f"**{ours.psnr - peer.psnr:+.1f} dB**: {short(ours)} {getattr(ours, x):.2f}×, {ours.psnr:.1f} dB; "
            f"{short(peer)} {getattr(peer, x):.2f}×, {peer.psnr:.1f} dB")


def fastest(rows: list[Row], x: str) -> str:
    sides = []
    for ours in (True, False):
        side = [r for r in rows if (r.family in OURS) == ours and r.family != "none" and r.psnr is not None
                and r.psnr >= FLOOR and getattr(r, x) is not None]
        best = max(side, key=lambda r: getattr(r, x), default=None)
        sides.append(f"{short(best)} {getattr(best, x):.2f}×, {best.psnr:.1f} dB" if best else "none")
    return " vs ".join(sides)


def gap_table(runs: dict[str, list[Row]], x: str) -> str:
    lines = [f"| run | 1.5× | 2× | 2.5× | fastest at ≥ {FLOOR:g} dB, ours vs peers |", "|---|---|---|---|---|"]
    for name, rows in runs.items():
        cells = [gap_cell(ours, peer, x) for _, ours, peer in frontier_pairs(rows, x)]
        lines.append(f"| {RUNS[name]} | " + " | ".join(cells) + f" | {fastest(rows, x)} |")
    return "\n".join(lines)


def front_table(rows: list[Row]) -> str:
    families: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.family != "none" and r.psnr is not None and r.measured is not None:
            families.setdefault((r.family, r.model), []).append(r)
    lines = ["| method | model | its front: measured speed-up, PSNR (dB) |", "|---|---|---|"]
    for (family, model), members in families.items():
        points = ", ".join(f"{r.measured:.2f}× {r.psnr:.1f}" for r in family_front(members))
        lines.append(f"| {family} | {model} | {points} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the OUT_DIR of benchmarks/frontier.sh")
    args = parser.parse_args()
    runs = {name: read_rows(args.folder / name / "bench.json") for name in RUNS
            if (args.folder / name / "bench.json").exists()}
    print("**At equal measured speed-up**\n\n" + gap_table(runs, "measured"))
    print("\n**At equal ideal speed-up (counted MACs)**\n\n" + gap_table(runs, "ideal"))
    for name, rows in runs.items():
        print(f"\n**{RUNS[name]}**\n\n{front_table(rows)}")


if __name__ == "__main__":
    main()
