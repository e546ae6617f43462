"""Stability analyses of Skip-DiT against a vanilla DiT (reference §E.4 and §F.3).

Two measurements, both on the hidden state *before the final layer*
(``h = model.run_units(*model.embed(x, t, y))``), for any class-conditional model that
:func:`skipdit.load` returns (DiT / Skip-DiT; Latte / Latte-skip work the same way):

* **Perturbation landscape** (the paper's ``feature.jpg`` / ``stability.jpg``): the mean cosine similarity
  between the features of ``x_t`` and of ``x_t + alpha*d1 + beta*d2`` over a grid of ``alpha, beta`` in
  [-1, 1]. A flat surface near 1 is a stable network. The official normalisation of ``d1, d2`` is not
  recorded; ours is in :func:`perturbation_directions`.
* **Spectral norms of unit Jacobians** (the "spectral constraint" argument of §F.3): sigma_max of the
  Jacobian of each unit map at the hidden state of a real forward pass, by power iteration with
  ``torch.func.jvp`` / ``vjp``. What exactly is measured is in :func:`unit_spectral_norms`.

Inputs (:func:`make_probe`) need no data. ``inputs="noise"`` draws ``x_t ~ N(0, I)``: that *is*
``q_sample(x0, t, eps)`` for ``x0 ~ N(0, I)``, since ``sqrt(abar)^2 + sqrt(1-abar)^2 = 1``, and both models
see the same tensors. ``inputs="trajectory"`` puts each model on its own deterministic DDIM path
(:func:`skipdit.diffusion.ddim_sample`) from ``x_T ~ N(0, I)`` (same seeds) down to ``t``, which is what the
model meets while sampling.

Hidden states and unit maps come from the model's own unit loop (``model.run_units``, ``model.unit``), so the
analyses follow the model's long-skip wiring. The one map the model has no method for, the fusion of a deep
unit alone, is :func:`fusion_map`.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .diffusion import GaussianDiffusion, ddim_sample, make_betas
from .diffusion.schedule import respace_betas
from .errors import UserError
from .io import atomic_write

INPUTS = ("noise", "trajectory")
# Upper bounds, so that a typo fails at once instead of as an allocation of terabytes (batch) or a run of days
# (grid: grid**2 forward passes); the paper's figures use batches of 8 to 16 and grids of 21.
MAX_BATCH = 1024
MAX_GRID = 101
NUM_TIMESTEPS = 1000  # DiT / Latte: linear schedule of 1000 steps (reference §C)
NORMALISATION = (
    "per sample: d1, d2 ~ N(0, I), d2 made orthogonal to d1, each scaled to radius * ||x_t||, so "
    "||alpha*d1 + beta*d2|| = radius * ||x_t|| * sqrt(alpha^2 + beta^2)"
)
_NEED_PLOTS = "plots need matplotlib: pip install 'skipdit[plots]'"


# -- inputs ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    """The inputs of one analysis: ``x`` (N, *sample_shape) at timestep ``t`` (N,) with labels ``y`` (N,)."""

    x: torch.Tensor
    t: torch.Tensor
    y: torch.Tensor

    @property
    def batch(self) -> int:
        return self.x.shape[0]


def check_settings(
    *, t: int = 500, batch: int = 1, grid: int = 3, radius: float = 0.05, iters: int = 1, inputs: str = "noise",
    steps: int = 1,
) -> None:
    """Raise ``ValueError`` (one line) for a setting the analyses cannot use."""
    if not _integer(t) or not 0 <= t < NUM_TIMESTEPS:
        raise UserError(f"t must be an integer timestep in 0..{NUM_TIMESTEPS - 1}, got {t}")
    if not _integer(batch) or not 1 <= batch <= MAX_BATCH:
        raise UserError(f"batch must be an integer in 1..{MAX_BATCH}, got {batch}")
    if not _integer(grid) or not 3 <= grid <= MAX_GRID or grid % 2 == 0:
        raise UserError(f"grid must be an odd integer in 3..{MAX_GRID} (so that alpha = beta = 0 is on it), "
                        f"got {grid}")
    if not (math.isfinite(radius) and radius > 0):
        raise UserError(f"radius must be a positive number, got {radius}")
    if not _integer(iters) or iters < 1:
        raise UserError(f"iters must be a positive integer, got {iters}")
    if inputs not in INPUTS:
        raise UserError(f"unknown inputs {inputs!r}; valid: {', '.join(INPUTS)}")
    if not _integer(steps) or steps < 1:
        raise UserError(f"steps must be a positive integer, got {steps}")


def _integer(value) -> bool:
    """An integer, or a float that is one (``int(nan)`` would raise a bare ValueError); a bool is not a count."""
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())


def check_model(model: nn.Module) -> None:
    """Only class-conditional (or unconditional) unit stacks: text models would need prompts."""
    if model.conditioning != "class":
        raise UserError(f"analyze supports class-conditional DiT / Latte models, not {type(model).__name__}")


@torch.no_grad()
def make_probe(
    model: nn.Module, *, t: int = 500, batch: int = 8, seed: int = 0, inputs: str = "noise", steps: int = 10,
) -> Probe:
    """``batch`` inputs at timestep ``t`` with random labels, reproducible from ``seed``, on the model's device.

    ``inputs="noise"``: ``x_t ~ N(0, I)`` (equal in law to ``q_sample`` of Gaussian ``x0``).
    ``inputs="trajectory"``: deterministic DDIM (eta = 0, no guidance) from ``x_T ~ N(0, I)`` to ``t`` in
    ``steps`` evenly spaced steps of the linear 1000-step schedule, with the model itself.
    """
    check_model(model)
    check_settings(t=t, batch=batch, inputs=inputs, steps=steps)
    weight = next(model.parameters())
    device = weight.device
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(batch, *model.sample_shape(), generator=gen).to(device, weight.dtype)
    num_classes = model.config.num_classes  # 0: an unconditional model, whose labels are ignored
    y = (torch.randint(num_classes, (batch,), generator=gen) if num_classes else torch.zeros(batch, dtype=torch.long))
    y = y.to(device)
    if inputs == "trajectory":
        x = _ddim_to(model, x, y, int(t), steps)
    return Probe(x, torch.full((batch,), int(t), device=device, dtype=torch.long), y)


def _ddim_to(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: int, steps: int) -> torch.Tensor:
    """DDIM (eta = 0) from ``x`` at timestep 999 down to ``t``, on the chain of kept timesteps ``t .. 999``."""
    keep = sorted({int(round(v)) for v in np.linspace(t, NUM_TIMESTEPS - 1, steps + 1)})
    if len(keep) == 1:  # t = 999: x_T is already there
        return x
    variance = "learned_range" if model.config.learn_sigma else "fixed_large"
    diffusion = GaussianDiffusion(respace_betas(make_betas("linear", NUM_TIMESTEPS), keep), keep, variance)
    at_t = []

    def keep_x_t(step: int, x_prev: torch.Tensor, x0: torch.Tensor) -> None:
        if step == len(keep) - 2:  # the step from chain index 1 lands on index 0, timestep t
            at_t.append(x_prev)

    # The sampler also takes the last step (index 0 -> x_0), one model call whose result is not used. The
    # schedule tables are float32: the model sees x in its own dtype.
    ddim_sample(lambda z, timesteps: model(z.to(x.dtype), timesteps, y), x, diffusion, eta=0.0, callback=keep_x_t)
    return at_t[0].to(x.dtype)


def features(model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The hidden state before the final layer, one row per sample: (N, tokens * D)."""
    h = model.run_units(*model.embed(x, t, y))  # (N, T, D); video models: (N*F, T, D), frames of a sample adjacent
    return h.reshape(x.shape[0], -1)


# -- perturbation landscape --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Landscape:
    """Mean feature cosine ``cosine[a, b]`` at ``x + alphas[a]*d1 + alphas[b]*d2`` (rows alpha, columns beta)."""

    alphas: list[float]
    cosine: torch.Tensor  # (G, G) float64
    radius: float

    @property
    def min(self) -> float:
        return float(self.cosine.min())

    @property
    def mean(self) -> float:
        return float(self.cosine.mean())

    def to_dict(self) -> dict:
        return {"min": self.min, "mean": self.mean, "radius": self.radius, "alphas": self.alphas,
                "cosine": self.cosine.tolist()}


def perturbation_directions(x: torch.Tensor, radius: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two directions shaped like ``x``; see ``NORMALISATION``. Gram-Schmidt makes d1 and d2 exactly
    orthogonal per sample, so the grid is a true 2-D slice with the perturbation norm growing radially."""
    gen = torch.Generator().manual_seed(int(seed))
    n = x.shape[0]
    g1, g2 = (torch.randn(x.shape, generator=gen, dtype=torch.float64).reshape(n, -1) for _ in range(2))
    d1 = g1 / g1.norm(dim=1, keepdim=True)
    g2 = g2 - (g2 * d1).sum(1, keepdim=True) * d1
    d2 = g2 / g2.norm(dim=1, keepdim=True)
    scale = radius * x.reshape(n, -1).double().norm(dim=1, keepdim=True)
    return tuple((scale * d).reshape(x.shape).to(x) for d in (d1, d2))


@torch.no_grad()
def perturbation_landscape(
    model: nn.Module, probe: Probe, *, grid: int = 21, radius: float = 0.05, seed: int = 0, chunk: int = 1024,
) -> Landscape:
    """Cosine similarity of the features of perturbed and clean inputs over a ``grid`` x ``grid`` slice.

    Per sample, the cosine is taken over the flattened features (all tokens and channels), then averaged
    over the batch. Grid points are evaluated ``chunk`` samples per forward pass.
    """
    check_model(model)
    check_settings(grid=grid, radius=radius)
    d1, d2 = perturbation_directions(probe.x, radius, seed)
    ref = features(model, probe.x, probe.t, probe.y).double()  # (N, F)
    alphas = torch.linspace(-1.0, 1.0, grid, dtype=torch.float64)
    alphas[grid // 2] = 0.0  # exactly the clean input at the centre
    points = [(a, b) for a in alphas.tolist() for b in alphas.tolist()]
    per_chunk = max(1, chunk // probe.batch)
    values = []
    for start in range(0, len(points), per_chunk):
        part = points[start:start + per_chunk]
        x = torch.cat([probe.x + a * d1 + b * d2 for a, b in part])  # (P*N, ...)
        reps = len(part)
        h = features(model, x, probe.t.repeat(reps), probe.y.repeat(reps)).double()
        cos = F.cosine_similarity(h.reshape(reps, probe.batch, -1), ref.unsqueeze(0), dim=-1)  # (P, N)
        values.append(cos.mean(dim=1).cpu())
    return Landscape(alphas.tolist(), torch.cat(values).reshape(grid, grid), float(radius))


# -- spectral norms ----------------------------------------------------------------------------------------
def power_iteration(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, iters: int = 20, seed: int = 0,
    groups: int | None = None,
) -> torch.Tensor:
    """sigma_max of the Jacobian of ``fn`` at ``x``, for each of ``groups`` samples (default ``x.shape[0]``).

    ``fn`` must act on each sample alone (its Jacobian is block-diagonal over the batch, as in a transformer
    unit in eval mode), with the rows of a sample adjacent along dim 0. Then one batched iteration
    ``v <- J^T J v / ||J^T J v||`` normalised per sample runs an independent power iteration for each
    sample. ``J v`` comes from ``torch.func.jvp``, ``J^T u`` from one ``torch.func.vjp`` linearisation; the
    estimate after ``iters`` iterations is ``||J^T J v|| / ||J v||``, a lower bound that converges to sigma_max.
    Attention runs on the math SDPA kernel, the one with forward-mode AD.
    """
    if not _integer(iters) or iters < 1:
        raise UserError(f"iters must be a positive integer, got {iters}")
    groups = x.shape[0] if groups is None else groups
    gen = torch.Generator().manual_seed(int(seed))
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)

    def per_sample_norm(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(groups, -1).norm(dim=1).clamp_min(torch.finfo(z.dtype).tiny)

    def scaled(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (z.reshape(groups, -1) / s.unsqueeze(1)).reshape(z.shape)

    v = scaled(v, per_sample_norm(v))
    sigma = torch.zeros(groups, dtype=x.dtype, device=x.device)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        _, transpose = torch.func.vjp(fn, x)
        for _ in range(int(iters)):
            _, u = torch.func.jvp(fn, (x,), (v,))  # J v
            (w,) = transpose(u)  # J^T J v
            w_norm = per_sample_norm(w)
            sigma = w_norm / per_sample_norm(u)
            v = scaled(w, w_norm)
    return sigma


@dataclass(frozen=True)
class SpectralNorms:
    """Per-unit, per-sample sigma_max estimates; ``None`` rows where a map does not exist (vanilla models
    have no fusion, shallow units of a Skip-DiT fuse nothing)."""

    block: torch.Tensor  # (L, N): h -> unit(i, h) at the unit's actual input
    fusion: list[torch.Tensor | None]  # (N,) per deep unit: h -> fuse(h, skip) with the skip fixed
    fused: list[torch.Tensor | None]  # (N,) per deep unit: h -> unit(i, fuse(h, skip)) with the skip fixed
    stack: torch.Tensor  # (N,): h0 -> run_units(h0), the whole stack with its skips

    @property
    def num_units(self) -> int:
        return self.block.shape[0]

    def to_dict(self) -> dict:
        def stats(rows):
            return {"mean": [None if r is None else float(r.mean()) for r in rows],
                    "max": [None if r is None else float(r.max()) for r in rows]}

        return {"num_units": self.num_units, "block": stats(list(self.block)), "fusion": stats(self.fusion),
                "fused": stats(self.fused), "stack": stats([self.stack])}


def fusion_map(model: nn.Module, i: int, skip: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``h -> Linear(LN([h, skip]))``: the long-skip fusion that ``model.run_units`` applies before deep unit ``i``
    (``i >= L/2``, :meth:`~skipdit.models.skip.LongSkipStack.fuse_skip`), with the skip held fixed."""
    if not model.has_long_skips or not model.num_units // 2 <= i < model.num_units:  # the protocol's wiring
        raise ValueError(f"unit {i} of {type(model).__name__} fuses no long skip")
    return lambda h: model.fuse_skip(i, h, skip)


def unit_spectral_norms(model: nn.Module, probe: Probe, *, iters: int = 20, seed: int = 0) -> SpectralNorms:
    """sigma_max of the Jacobians of the unit maps at the hidden states of a real forward pass of ``probe``.

    For each unit ``i`` with input ``h_i`` (after its skip fusion, if any) and conditioning ``ctx``:

    * ``block[i]``: ``h -> unit(i, h, ctx)`` at ``h_i``. For a deep unit of a Skip-DiT this is the block
      alone, its fusion excluded.
    * ``fusion[i]`` (long-skip deep units ``i >= L/2``): ``h -> Linear(LN([h, s]))`` at the pre-fusion
      state, with the skip ``s`` (output of unit ``L-1-i``) held at its forward value: how much of the
      sequential path the LSC passes on (compare the ``1 - alpha`` weight of §F.3).
    * ``fused[i]`` (same units): ``h -> unit(i, Linear(LN([h, s])), ctx)``, the fusion and the block
      together, the deep unit as the sequential path sees it: ``run_units(h, ctx, i, i + 1, [s])``.
    * ``stack``: ``h0 -> run_units(h0, ctx)`` from the embedded tokens to the features before the final
      layer, long skips included: the end-to-end amplification that Dynamic Feature Instability is about.

    Each is estimated per sample with :func:`power_iteration` (``iters`` iterations from ``seed``).
    """
    check_model(model)
    check_settings(iters=iters)
    n = probe.batch
    with torch.no_grad():
        h, ctx = model.embed(probe.x, probe.t, probe.y)
    h0 = h
    # with long skips, units L/2 .. L-1 fuse the output of unit L-1-i, the top of the stack (protocol.py)
    first_deep = model.num_units // 2 if model.has_long_skips else model.num_units
    skips: list[torch.Tensor] = []
    block, fusion, fused = [], [], []
    for i in range(model.num_units):
        if i >= first_deep:
            skip = skips[-1]
            fuse_fixed = fusion_map(model, i, skip)

            def fused_unit(z, i=i, skip=skip):  # the unit as the model's loop runs it: fusion, then the block
                return model.run_units(z, ctx, i, i + 1, [skip])

            fusion.append(power_iteration(fuse_fixed, h, iters=iters, seed=seed, groups=n))
            fused.append(power_iteration(fused_unit, h, iters=iters, seed=seed, groups=n))
            with torch.no_grad():
                unit_input = fuse_fixed(h)
        else:
            fusion.append(None)
            fused.append(None)
            unit_input = h
        block.append(power_iteration(lambda z, i=i: model.unit(i, z, ctx), unit_input, iters=iters, seed=seed,
                                     groups=n))
        with torch.no_grad():
            h = model.run_units(h, ctx, i, i + 1, skips)  # the real forward: pushes / pops ``skips``
    stack = power_iteration(lambda z: model.run_units(z, ctx), h0, iters=iters, seed=seed, groups=n)
    return SpectralNorms(torch.stack(block).cpu(), [_cpu(r) for r in fusion], [_cpu(r) for r in fused], stack.cpu())


def _cpu(row: torch.Tensor | None) -> torch.Tensor | None:
    return None if row is None else row.cpu()


# -- comparisons (what `skipdit analyze` runs) -------------------------------------------------------------
def compare_landscapes(
    models: Mapping[str, nn.Module], *, t: int = 500, grid: int = 21, radius: float = 0.05, batch: int = 16,
    seed: int = 0, inputs: str = "noise", steps: int = 10, out_dir: str | Path | None = None,
) -> dict[str, Landscape]:
    """:func:`perturbation_landscape` of each model on the same seeds; with ``out_dir``, also writes
    ``landscape.json`` and ``landscape.png`` (one panel per model, one colour scale)."""
    check_settings(t=t, batch=batch, grid=grid, radius=radius, inputs=inputs, steps=steps)
    results = {}
    for name, model in models.items():
        probe = make_probe(model, t=t, batch=batch, seed=seed, inputs=inputs, steps=steps)
        results[name] = perturbation_landscape(model, probe, grid=grid, radius=radius, seed=seed)
    if out_dir is not None:
        settings = {"t": t, "grid": grid, "radius": radius, "batch": batch, "seed": seed, "inputs": inputs,
                    "steps": steps if inputs == "trajectory" else None, "normalisation": NORMALISATION,
                    "features": "hidden state before the final layer; per-sample cosine, batch mean"}
        out = Path(out_dir)
        _write_json(out / "landscape.json", {"settings": settings, "models": _describe(models, results)})
        plot_landscapes(results, out / "landscape.png", title=f"feature cosine under input perturbation, "
                        f"t={t}, radius={radius}")
    return results


def compare_spectral(
    models: Mapping[str, nn.Module], *, t: int = 500, iters: int = 20, batch: int = 8, seed: int = 0,
    inputs: str = "noise", steps: int = 10, out_dir: str | Path | None = None,
) -> dict[str, SpectralNorms]:
    """:func:`unit_spectral_norms` of each model on the same seeds; with ``out_dir``, also writes
    ``spectral.json`` and ``spectral.png``."""
    check_settings(t=t, batch=batch, iters=iters, inputs=inputs, steps=steps)
    results = {}
    for name, model in models.items():
        probe = make_probe(model, t=t, batch=batch, seed=seed, inputs=inputs, steps=steps)
        results[name] = unit_spectral_norms(model, probe, iters=iters, seed=seed)
    if out_dir is not None:
        settings = {"t": t, "iters": iters, "batch": batch, "seed": seed, "inputs": inputs,
                    "steps": steps if inputs == "trajectory" else None,
                    "estimate": "power iteration on J^T J per sample; mean and max over the batch"}
        out = Path(out_dir)
        _write_json(out / "spectral.json", {"settings": settings, "models": _describe(models, results)})
        plot_spectral(results, out / "spectral.png", title=f"sigma_max of unit Jacobians, t={t}")
    return results


def _describe(models: Mapping[str, nn.Module], results: Mapping) -> dict:
    return {name: {"long_skip": bool(model.has_long_skips), "num_units": model.num_units,
                   **results[name].to_dict()} for name, model in models.items()}


def _write_json(path: Path, payload: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=1) + "\n"))


def landscape_summary(results: Mapping[str, Landscape]) -> str:
    width = max(len(name) for name in results)
    lines = [f"{'model':<{width}}  {'min cos':>10}  {'mean cos':>10}"]
    lines += [f"{name:<{width}}  {r.min:>10.6f}  {r.mean:>10.6f}" for name, r in results.items()]
    return "\n".join(lines)


def spectral_table(results: Mapping[str, SpectralNorms]) -> str:
    """One row per unit: the block sigma_max of every model, then fused ones (``-`` where none)."""
    names = list(results)
    columns = [(name, "block") for name in names]
    columns += [(name, "fused") for name in names if any(r is not None for r in results[name].fused)]
    width = max(12, *(len(f"{name} {kind}") for name, kind in columns))
    header = f"{'unit':>4}  " + "  ".join(f"{f'{name} {kind}':>{width}}" for name, kind in columns)
    lines = [header]
    for i in range(max(r.num_units for r in results.values())):
        cells = []
        for name, kind in columns:
            r = results[name]
            row = None if i >= r.num_units else (r.block[i] if kind == "block" else r.fused[i])
            cells.append(f"{'-' if row is None else f'{float(row.mean()):.4f}':>{width}}")
        lines.append(f"{i:>4}  " + "  ".join(cells))
    stack = [f"{float(results[name].stack.mean()):.4f}" if kind == "block" else "-" for name, kind in columns]
    lines.append(f"{'all':>4}  " + "  ".join(f"{cell:>{width}}" for cell in stack) + "   (whole stack h0 -> h)")
    return "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------------------------
def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure  # the object API needs no pyplot and no global backend
    except ImportError as err:
        raise UserError(_NEED_PLOTS) from err
    return Figure(**kwargs)


def plot_landscapes(results: Mapping[str, Landscape], path: str | Path, title: str = "") -> Path:
    """3-D surfaces (top) and heatmaps (bottom), one column per model, on one colour scale."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    lo = min(r.min for r in results.values())
    norm = Normalize(vmin=min(lo, 1.0 - 1e-6), vmax=1.0)
    cmap = colormaps["viridis"]
    cols = len(results)
    fig = _figure(figsize=(4.5 * cols, 8.5), layout="constrained")
    for k, (name, r) in enumerate(results.items()):
        grid = np.asarray(r.alphas)
        a, b = np.meshgrid(grid, grid, indexing="ij")
        z = r.cosine.numpy()
        ax = fig.add_subplot(2, cols, k + 1, projection="3d")
        ax.plot_surface(b, a, z, cmap=cmap, norm=norm, linewidth=0, antialiased=True)
        ax.set_zlim(norm.vmin, norm.vmax)
        ax.set(xlabel="beta", ylabel="alpha", title=f"{name}\nmin {r.min:.4f}, mean {r.mean:.4f}")
        ax2 = fig.add_subplot(2, cols, cols + k + 1)
        image = ax2.imshow(z, origin="lower", extent=(-1, 1, -1, 1), cmap=cmap, norm=norm)
        ax2.set(xlabel="beta", ylabel="alpha")
    fig.colorbar(image, ax=fig.axes[1::2], shrink=0.8, label="cosine similarity")
    if title:
        fig.suptitle(title)
    return _save(fig, Path(path))


def plot_spectral(results: Mapping[str, SpectralNorms], path: str | Path, title: str = "") -> Path:
    """Per-unit block sigma_max (solid) and, for long-skip models, fused deep units (dashed)."""
    fig = _figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for k, (name, r) in enumerate(results.items()):
        colour = f"C{k}"
        units = np.arange(r.num_units)
        ax.plot(units, r.block.mean(dim=1).numpy(), "o-", color=colour,
                label=f"{name}: unit (whole stack {float(r.stack.mean()):.3g})")
        deep = [(i, float(row.mean())) for i, row in enumerate(r.fused) if row is not None]
        if deep:
            ax.plot(*zip(*deep), "s--", color=colour, label=f"{name}: fusion + unit (skip fixed)")
    ax.set(xlabel="unit", ylabel="sigma_max (mean over samples)")
    ax.set_xticks(np.arange(max(r.num_units for r in results.values())))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, Path(path))


def _save(fig, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
