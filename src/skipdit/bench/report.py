"""What ``skipdit bench`` writes: the markdown table, the Pareto plot of speed-up against PSNR (the
paper's Figure 1c) and the per-step feature similarity (Figure 1a)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io import atomic_write
from .harness import Row, rows_as_dicts

# Figure 1a compares Skip-DiT + Skip-Cache with vanilla DiT + FORA and + DeepCache-style, at the same N; the
# forecasting Skip-Cache at that N is drawn beside them.
SIMILARITY_METHODS = (("Skip-Cache", "N=3"), ("Forecasting Skip-Cache", "N=3,order=1"), ("FORA", "N=3"),
                      ("DeepCache-style", "N=3,b=1"))


def _fmt(value, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| method | model | measured speed-up | ideal (MACs) | PSNR (dB) | SSIM | LPIPS | accuracy | FDD "
             "| full / cached steps |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.model} | {_fmt(r.measured, '{:.2f}×')} | {_fmt(r.ideal, '{:.2f}×')} "
            f"| {_fmt(r.psnr, '{:.1f}')} | {_fmt(r.ssim, '{:.4f}')} | {_fmt(r.lpips, '{:.4f}')} "
            f"| {_fmt(r.accuracy, '{:.1%}')} | {_fmt(r.fdd, '{:.1f}')} "
            f"| {'—' if r.full_steps is None else f'{r.full_steps} / {r.cached_steps}'} |")
    return "\n".join(lines)


# skipdit's own caches of a long-skip model; every other family is a peer
OURS = ("Skip-Cache", "Adaptive Skip-Cache", "Forecasting Skip-Cache")
FRONTIER_SPEEDUPS = (1.5, 2.0, 2.5)


def headline(rows: Sequence[Row], tolerance: float = 0.1) -> str | None:
    """The fidelity gap at equal speed-up: each row of our caches (:data:`OURS`) against the best peer row whose
    measured speed-up is at least ours minus ``tolerance``; then :func:`frontier_gaps`."""
    ours = [r for r in rows if r.family in OURS and r.psnr is not None and r.measured is not None]
    peers = _peers(rows)
    lines = []
    for r in sorted(ours, key=lambda r: (r.family, r.measured)):
        rivals = [p for p in peers if p.measured >= r.measured - tolerance]
        if not rivals:
            lines.append(f"{r.method} at {r.measured:.2f}×: {r.psnr:.1f} dB; no peer reaches this speed-up")
            continue
        best = max(rivals, key=lambda p: p.psnr)
        lines.append(f"{r.method} at {r.measured:.2f}×: {r.psnr:.1f} dB vs the best peer at ≥ "
                     f"{r.measured - tolerance:.2f}×, {best.method} on {best.model} ({best.measured:.2f}×): "
                     f"{best.psnr:.1f} dB, a gap of {r.psnr - best.psnr:+.1f} dB")
    for x in ("measured", "ideal"):
        gaps = frontier_gaps(rows, x)
        if gaps:
            lines.append(f"\nAt equal {'measured' if x == 'measured' else 'ideal (MACs)'} speed-up, the best of ours "
                         "against the best peer (each the highest PSNR among the rows at least that fast):")
            lines += [f"- {g}" for g in gaps]
    return "\n".join(lines) or None


def frontier_pairs(rows: Sequence[Row], x: str = "measured", speedups: Sequence[float] = FRONTIER_SPEEDUPS
                   ) -> list[tuple[float, Row | None, Row | None]]:
    """At each speed-up ``s``: the highest-PSNR row of ours and of the peers among those with speed-up ``x``
    (``measured`` or ``ideal``) of at least ``s`` (``None`` where no row is that fast)."""
    ours = [r for r in rows if r.family in OURS and r.psnr is not None]
    return [(speedup, *(max((r for r in group if getattr(r, x) is not None and getattr(r, x) >= speedup),
                            key=lambda r: r.psnr, default=None) for group in (ours, _peers(rows))))
            for speedup in speedups]


def frontier_gaps(rows: Sequence[Row], x: str = "measured",
                  speedups: Sequence[float] = FRONTIER_SPEEDUPS) -> list[str]:
    """:func:`frontier_pairs` in words: both rows at each speed-up and the gap between them."""
    lines = []
    for speedup, *best in frontier_pairs(rows, x, speedups):
        if best[0] is None and best[1] is None:
            continue
        shown = [f"{r.method} {getattr(r, x):.2f}×, {r.psnr:.1f} dB" if r else "none reaches it" for r in best]
        gap = f"{best[0].psnr - best[1].psnr:+.1f} dB" if None not in best else "—"
        lines.append(f"{speedup:g}×: ours {shown[0]}; peers {shown[1]}; gap {gap}")
    return lines


def _peers(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.family not in (*OURS, "none") and r.psnr is not None and r.measured is not None]


def family_front(members: Sequence[Row], x: str = "measured") -> list[Row]:
    """The rows of one family that no other row of it beats on both speed-up and PSNR, fastest last."""
    front = [r for r in members
             if not any(getattr(o, x) >= getattr(r, x) and o.psnr >= r.psnr and
                        (getattr(o, x), o.psnr) != (getattr(r, x), r.psnr) for o in members)]
    return sorted(front, key=lambda r: getattr(r, x))


# Up to 20 families, each its own colour and marker; ours drawn first, thick, in the first colours. diffusers'
# hooks are dashed and cache-dit's dash-dotted, so the external peers stand apart from our implementations.
_MARKERS = "os^vDPX<>*hpd8H"
_EXTERNAL_LINES = {"diffusers": "--", "cache-dit": "-."}  # by the first word of the family


def pareto_plot(rows: Sequence[Row], path: str | Path, x: str = "measured") -> None:
    """PSNR against speed-up (Figure 1c): every row as a marker, each family's front (:func:`family_front`) as a
    line through its markers."""
    from matplotlib import colormaps

    fig = _figure((8, 5))
    ax = fig.subplots()
    families: dict[str, list[Row]] = {}
    for r in rows:
        if r.family != "none" and r.psnr is not None and getattr(r, x) is not None:
            families.setdefault(r.family, []).append(r)
    order = sorted(families, key=lambda f: f not in OURS)  # stable: ours first, then the bench's order
    colours = colormaps["tab20"].colors
    for i, family in enumerate(order):
        members = families[family]
        front = family_front(members, x)
        ours = family in OURS
        colour = colours[2 * i % 20 + i // 10 % 2]  # tab20's ten dark colours, then its ten light ones
        style = dict(color=colour, marker=_MARKERS[i % len(_MARKERS)], markersize=8 if ours else 6,
                     zorder=3 if ours else 2)
        line = _EXTERNAL_LINES.get(family.split(" ")[0], "-")
        ax.plot([getattr(r, x) for r in front], [r.psnr for r in front], linestyle=line,
                linewidth=2.5 if ours else 1.2, label=family, **style)
        behind = [r for r in members if r not in front]
        if behind:
            ax.plot([getattr(r, x) for r in behind], [r.psnr for r in behind], linestyle="none",
                    fillstyle="none", **style)
    ax.set_xlabel(f"{'measured' if x == 'measured' else 'ideal (MACs)'} speed-up over uncached (×)")
    ax.set_ylabel("PSNR vs uncached (dB)")
    ax.set_title("lines: each method's front; open markers: its other settings", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def similarity_plot(rows: Sequence[Row], path: str | Path) -> list[str]:
    """Per-step cosine similarity of output-layer features, cached vs uncached (Figure 1a), drawn as
    ``1 - cosine`` on a log axis so the differences near 1 are visible. Returns the rows drawn."""
    fig = _figure((7, 4))
    ax = fig.subplots()
    drawn = []
    for family, setting in SIMILARITY_METHODS:
        row = next((r for r in rows if r.family == family and r.setting == setting and r.similarity), None)
        if row is None:
            continue
        distance = [max(1.0 - c, 1e-9) for c in row.similarity]  # full steps before any reuse are exactly 1
        ax.plot(range(len(distance)), distance, label=f"{row.method} on {row.model}")
        drawn.append(row.method)
    ax.set_yscale("log")
    ax.set_xlabel("denoising step (t = T … 0)")
    ax.set_ylabel("1 − cosine similarity to uncached (log)")
    ax.set_title("output-layer features, cached vs uncached run (lower = closer)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return drawn


def _figure(size: tuple[float, float]):
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot, no global backend
    except ImportError as err:
        raise UserError("the bench plots need matplotlib: pip install 'skipdit[plots]'") from err
    return Figure(figsize=size)


@dataclass
class BenchReport:
    """What :func:`write_report` wrote: the text of ``bench.md`` and the files in the output folder."""

    text: str
    files: list[str]
    drawn: list[str]  # the families the similarity plot shows


def write_report(out: str | Path, rows: Sequence[Row], skipped: Sequence[dict], context: str) -> BenchReport:
    """``bench.md`` (the table), ``bench.json`` (every row), ``pareto.png`` (PSNR against the measured speed-up,
    the paper's Figure 1c), ``pareto-macs.png`` (against the ideal speed-up from counted MACs) and
    ``similarity.png`` (per-step feature similarity, Figure 1a) in ``out``, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = f"{context}\n\n{markdown_table(rows)}\n"
    summary = headline(rows)
    if summary:
        text += f"\n{summary}\n"
    batch_wide = [r.method for r in rows if r.batch_dependent]
    if batch_wide:
        text += (f"\nDecided per batch, so each sample depends on the other seeds of its batch (docs/caches.md): "
                 f"{', '.join(batch_wide)}.\n")
    if skipped:
        text += "\nNot run:\n" + "".join(f"- {s['method']}: {s['reason']}\n" for s in skipped)
    payload = json.dumps({"context": context, "rows": rows_as_dicts(rows), "skipped": list(skipped)}, indent=1)
    atomic_write(out / "bench.md", lambda tmp: tmp.write_text(text))
    atomic_write(out / "bench.json", lambda tmp: tmp.write_text(payload))
    atomic_write(out / "pareto.png", lambda tmp: pareto_plot(rows, tmp))
    atomic_write(out / "pareto-macs.png", lambda tmp: pareto_plot(rows, tmp, x="ideal"))
    drawn: list[str] = []
    atomic_write(out / "similarity.png", lambda tmp: drawn.extend(similarity_plot(rows, tmp)))
    return BenchReport(text, ["bench.md", "bench.json", "pareto.png", "pareto-macs.png", "similarity.png"], drawn)
