"""The comparison behind ``skipdit bench``: every cache on the same models, seeds and sampler.

For each method the harness runs, in one process:

* a *counted* run (untimed): the samples for fidelity, the MACs the run executed (torch's FLOP counter,
  attention through the math kernel so it is counted; MACs = FLOPs / 2), and the features entering the
  output layer at every step, compared with the uncached run's (the paper's Figure 1a);
* ``repeats`` *timed* runs, each right after a timed uncached run of the same model (for an external peer,
  diffusers' hooks or cache-dit: the same diffusers transformer without a cache), so slow drifts of the
  machine hit both; the measured speed-up is the ratio of the medians.

Fidelity is against the uncached output of the model the method runs on: PSNR, SSIM, LPIPS (with local
weights), and for the digits models the evaluator's accuracy and FDD. The ideal speed-up is uncached
MACs / cached MACs, which counts what sublayer caches (FORA, ToCa, PAB, T-GATE) and data-dependent ones
(TeaCache, First-Block-Cache, adaptive) really skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ..cache import TeaCache, parse_cache
from ..cache.skip_cache import PRESETS as SKIP_PRESETS
from ..errors import UserError
from ..metrics import psnr, ssim
from ..metrics.fidelity import SSIM_WINDOW
from ..models import DiT, Latte, LatteT2V
from ..sampling import Condition, Generation, Runtime, Sampling, cycle, generate
from ..timing import interleaved
from ..tuning import calibrate_teacache
from .cachedit_peers import setting_name


class NotApplicable(Exception):
    """The method cannot act on this model (Δ-DiT on long skips, T-GATE without text, a peer library that is
    not installed ...), or an external peer's hook silently did nothing (peers §2.5): the bench lists it with
    the reason instead of a row."""


@dataclass(frozen=True)
class Method:
    """One row: ``spec`` (our cache), ``diffusers`` (a diffusers peer: method name and options) or ``cachedit``
    (a cache-dit peer: the same) on the ``model`` or the ``baseline`` model. ``family`` groups the settings of
    one method in the plots."""

    family: str
    setting: str
    on: str = "baseline"
    spec: str | None = None
    diffusers: tuple[str, tuple[tuple[str, object], ...]] | None = None
    cachedit: tuple[str, tuple[tuple[str, object], ...]] | None = None

    @property
    def label(self) -> str:
        return f"{self.family} ({self.setting})"

    @property
    def batch_dependent(self) -> bool:
        """Whether the method decides from one indicator over the whole batch, so a sample's output depends
        on the other samples of its batch: our run-time policies, and diffusers' First-Block-Cache, whose
        residual change is an abs-mean over the whole tensor (reference peers.md), and every cache-dit cache,
        whose residual differences are too."""
        if self.cachedit is not None:
            return True
        if self.diffusers is not None:
            return self.diffusers[0] == "fbc"
        policy = parse_cache(self.spec)
        return policy is not None and policy.decides_at_run_time


# Settings swept per family: the method, where it runs ("model" = the skip model), its specs.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "skip": ("Skip-Cache", "model", ("skip:N=2", "skip:N=3", "skip:N=4", "skip:N=5")),
    "adaptive": ("Adaptive Skip-Cache", "model",
                 ("adaptive:threshold=0.02,max=4", "adaptive:threshold=0.05,max=6", "adaptive:threshold=0.1,max=8")),
    "taylor": ("Forecasting Skip-Cache", "model", ("taylor:N=2,order=1", "taylor:N=3,order=1", "taylor:N=4,order=1",
                                                   "taylor:N=4,order=2", "taylor:N=5,order=1")),
    "fora": ("FORA", "baseline", ("fora:N=2", "fora:N=3", "fora:N=4")),
    "toca": ("ToCa", "baseline", ("toca:N=3,ratio=0.3", "toca:N=3,ratio=0.2", "toca:N=4,ratio=0.2")),
    "delta": ("Δ-DiT", "baseline", ("delta:N=2", "delta:N=3")),
    "deepcache": ("DeepCache-style", "baseline", ("deepcache:N=2,b=1", "deepcache:N=3,b=1", "deepcache:N=2,b=2")),
    "pab": ("PAB", "baseline", ("pab:spatial=2,temporal=3,cross=6", "pab:spatial=3,temporal=4,cross=8",
                                "pab:spatial=4,temporal=6,cross=10,mlp=4")),
    "tgate": ("T-GATE", "baseline", ("tgate:gate={quarter}", "tgate:gate={half}", "tgate:gate={quarter},cfg=drop",
                                     "tgate:gate={half},cfg=drop")),
    "teacache": ("TeaCache", "baseline", ("teacache:threshold=0.05", "teacache:threshold=0.1",
                                          "teacache:threshold=0.2")),
    "fbc": ("First-Block-Cache", "baseline", ("fbc:threshold=0.05", "fbc:threshold=0.1", "fbc:threshold=0.2")),
}
# diffusers' hooks (skipdit.bench.diffusers_peers), on the baseline model only: diffusers has no long skips.
DIFFUSERS: dict[str, tuple[str, tuple[dict, ...]]] = {
    "hf-pab": ("diffusers PAB", ({}, {"spatial_attention_block_skip_range": 3})),
    "hf-fbc": ("diffusers FBC", ({"threshold": 0.05}, {"threshold": 0.1})),
    "hf-magcache": ("diffusers MagCache", ({"threshold": 0.06}, {"threshold": 0.12})),
    "hf-fastercache": ("diffusers FasterCache", ({},)),
}
# cache-dit (skipdit.bench.cachedit_peers), on the baseline model: diffusers' DiT with cache-dit's caches, at its
# default warm-up (8 calls) and limits (none), and with a warm-up of 2 (W2), since 8 of 20 steps bar any speed-up
# past 20 / 8 = 2.5x. F1B0 is cache-dit's fastest DBCache and F8B0 its default, meant for a 28-block DiT-XL: on fewer
# blocks than F + B + 1 a setting leaves nothing to cache and is listed as not run.
CACHE_DIT: dict[str, tuple[str, tuple[dict, ...]]] = {
    "cd-dbcache": ("cache-dit DBCache", (
        *(dict(Fn_compute_blocks=f, Bn_compute_blocks=0, residual_diff_threshold=r)
          for f, r in ((1, 0.05), (1, 0.08), (1, 0.12), (4, 0.08), (8, 0.08))),
        *(dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=r, max_warmup_steps=2)
          for r in (0.08, 0.12)))),
    "cd-taylorseer": ("cache-dit DBCache+TaylorSeer", (
        *(dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=r, taylorseer_order=o)
          for r, o in ((0.12, 1), (0.12, 2), (0.2, 1))),
        dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.12, taylorseer_order=1,
             max_warmup_steps=2))),
    "cd-dbprune": ("cache-dit DBPrune", tuple(
        dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=r) for r in (0.05, 0.08))),
}


def select_methods(names: str, steps: int) -> list[Method]:
    """``"all"``, family names (``"skip,fora,hf-pab,cd-dbcache"``) or explicit specs (``"fora:N=5"``, run on the
    baseline model; ``skip:`` / ``adaptive:`` / preset specs on the model), comma-separated; ``"all,taylor:N=6"``
    adds specs to every family."""
    chosen = [name for item in _split(names) for name in ([*FAMILIES, *DIFFUSERS, *CACHE_DIT] if item == "all"
                                                          else [item])]
    methods = []
    for name in chosen:
        if name in FAMILIES:
            family, on, specs = FAMILIES[name]
            for spec in specs:
                spec = spec.format(quarter=max(1, steps // 4), half=max(1, steps // 2))
                methods.append(Method(family, spec.partition(":")[2], on, spec))
        elif name in DIFFUSERS:
            family, settings = DIFFUSERS[name]
            for options in settings:
                shown = ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"
                methods.append(Method(family, shown, "baseline", None, (name[3:], tuple(options.items()))))
        elif name in CACHE_DIT:
            family, settings = CACHE_DIT[name]
            for options in settings:
                peer = (name[3:], tuple(options.items()))
                methods.append(Method(family, setting_name(options), "baseline", cachedit=peer))
        else:
            policy = parse_cache(name)  # a spec: fails with the list of families if malformed
            if policy is None:
                raise UserError(f"--caches {name!r}: nothing to compare ('none' is always the reference)")
            family = "skip" if policy.family in SKIP_PRESETS else policy.family
            shown, on, _ = FAMILIES.get(family, (family, "baseline", ()))
            methods.append(Method(shown, name.partition(":")[2] or "defaults", on, name))
    if not methods:
        raise UserError(f"--caches {names!r} names no method; use 'all', families ({', '.join(FAMILIES)}, "
                        f"{', '.join(DIFFUSERS)}, {', '.join(CACHE_DIT)}) or specs such as fora:N=5")
    return methods


def _split(names: str) -> list[str]:
    """Comma-separated items; commas inside a spec's arguments stay with it (``fora:N=2,start=900``)."""
    items: list[str] = []
    for part in (p.strip() for p in names.split(",")):
        if not part:
            continue
        if items and ":" in items[-1] and "=" in part and ":" not in part:
            items[-1] += "," + part
        else:
            items.append(part)
    return items


@dataclass
class Row:
    method: str
    family: str
    setting: str
    model: str
    measured: float | None = None
    ideal: float | None = None
    macs_per_sample: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    accuracy: float | None = None
    fdd: float | None = None
    full_steps: int | None = None
    cached_steps: int | None = None
    reused: str = ""
    similarity: list[float] = field(default_factory=list)  # per step: cosine of output-layer features
    batch_dependent: bool = False  # decided per batch: the row holds for these seeds in this batch (docs/caches.md)


@dataclass
class Counted:
    """A counted run: its samples, MACs and the features entering the output layer at each step."""

    out: Generation
    macs: float
    features: list[torch.Tensor]


def _output_layer(model) -> torch.nn.Module:
    """The layer the final hidden state enters: ours (DiT, Latte: ``final_layer``; Latte-T2V: ``norm_out``), or
    an external peer's diffusers transformer's (``norm_out``)."""
    from .diffusers_peers import TransformerPeer

    if isinstance(model, TransformerPeer):
        return model.transformer.norm_out
    if isinstance(model, (DiT, Latte)):
        return model.final_layer
    if isinstance(model, LatteT2V):
        return model.norm_out
    raise TypeError(f"the bench does not know the output layer of {type(model).__name__}")


@contextmanager
def _features_entering_head(model, into: list[torch.Tensor]):
    """Record the hidden state entering ``model``'s output layer at each call."""
    target = _output_layer(model)
    handle = target.register_forward_pre_hook(lambda _m, args: into.append(args[0].detach().float().cpu()))
    try:
        yield
    finally:
        handle.remove()


def counted_run(model, run: Callable[[], Generation]) -> Counted:
    """``run()`` under the FLOP counter (attention through the math kernel, so it is counted), recording
    the features that enter ``model``'s output layer (an external peer's: its transformer's)."""
    recorded: list[torch.Tensor] = []
    recorder = _features_entering_head(model, recorded)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), recorder:
        out = run()
    return Counted(out, counter.get_total_flops() / 2, recorded)


def step_similarity(reference: list[torch.Tensor], cached: list[torch.Tensor]) -> list[float]:
    """Mean cosine similarity (over samples, of flattened features) at each step; empty if the runs
    recorded different numbers of calls. A call that ran the conditional branch alone (T-GATE ``cfg=drop``
    after the gate) is compared with the conditional half of the reference's batched call, which comes first."""
    if not reference or len(reference) != len(cached):
        return []
    return [F.cosine_similarity(a[: len(b)].flatten(1), b.flatten(1), dim=1).mean().item()
            for a, b in zip(reference, cached)]


@dataclass
class Bench:
    """Everything one comparison needs: the two models, the sampling settings shared by every run,
    the fidelity extras, and the timing protocol."""

    models: dict[str, object]  # "model" / "baseline" -> model
    names: dict[str, str]  # the same keys -> display names
    seeds: Sequence[int]
    condition: Condition  # labels or prompts of the seeds
    sampling: Sampling
    runtime: Runtime = Runtime()
    repeats: int = 2
    evaluator: object | None = None  # DigitsEvaluator for digits models
    lpips_model: object | None = None
    progress: bool = True
    references: dict[str, Counted] = field(default_factory=dict)

    def __post_init__(self):
        """Settings that would only fail after the whole run (a median of no timings, a Fréchet distance of one
        sample) fail here, before any sampling."""
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise UserError(f"repeats must be an integer >= 1, got {self.repeats!r}")
        if not self.seeds:
            raise UserError("no seeds given")
        if self.evaluator is not None and len(self.seeds) < 2:
            raise UserError(f"{len(self.seeds)} seed: the digits evaluator's Fréchet distance needs at least 2")

    def generate(self, model, cache=None, sampling: Sampling | None = None) -> Generation:
        """One run of ``model`` on the bench's seeds and settings."""
        return generate(model, self.seeds, self.condition, sampling=sampling or self.sampling,
                        runtime=self.runtime, cache=cache)

    def reference(self, on: str) -> Counted:
        if on not in self.references:
            model = self.models[on]
            self.generate(model, sampling=self.sampling.warm_up())  # warm-up at the full batch
            self.references[on] = counted_run(model, lambda: self.generate(model))
        return self.references[on]

    def run(self, method: Method, prepare: Callable[[Method, object], tuple[object, object, object]]) -> Row:
        """One row. ``prepare(method, model)`` gives the module to sample with (``net``), its cache policy, and
        the uncached module its timing is compared with (the model itself, or for an external peer the same
        diffusers transformer without a cache, so the speed-up measures the cache, not the implementation)."""
        from .diffusers_peers import TransformerPeer

        on = method.on if method.on in self.models else "model"
        model = self.models[on]
        try:
            net, cache, uncached = prepare(method, model)
            if cache is not None:
                cache.check_model(model)
        except (ValueError, ImportError) as err:
            raise NotApplicable(str(err).splitlines()[0]) from err
        ref = self.reference(on)
        counted = counted_run(net, lambda: self.generate(net, cache))
        timed = interleaved({"uncached": lambda: self.generate(uncached), "cached": lambda: self.generate(net, cache)},
                            self.repeats, lambda run: run.seconds)
        out, base = counted.out, ref.out
        row = Row(method.label, method.family, method.setting, self.names[on],
                  measured=timed.speedup("uncached", "cached"),
                  ideal=ref.macs / counted.macs if counted.macs else None,
                  macs_per_sample=counted.macs / len(self.seeds),
                  psnr=_mean(psnr(out.images, base.images)), ssim=_ssim(out.images, base.images),
                  full_steps=out.stats.full_steps, cached_steps=out.stats.cached_steps,
                  reused=", ".join(out.stats.reused), similarity=step_similarity(ref.features, counted.features),
                  batch_dependent=method.batch_dependent)
        if isinstance(net, TransformerPeer):  # what its hooks reused
            if not net.engaged:
                raise NotApplicable(f"the {net.library} hook never engaged here ({net.report().summary()})")
            row.reused = net.report().summary()
            row.full_steps = row.cached_steps = None  # the hooks decide per block, not per step
        self._quality(row, out, on)
        return row

    def uncached_row(self, on: str) -> Row:
        ref = self.reference(on)
        row = Row(f"{self.names[on]} uncached", "none", "—", self.names[on], measured=1.0, ideal=1.0,
                  macs_per_sample=ref.macs / len(self.seeds), full_steps=ref.out.stats.full_steps, cached_steps=0)
        self._quality(row, ref.out, on)
        return row

    def _quality(self, row: Row, out: Generation, on: str) -> None:
        if self.lpips_model is not None:
            from ..metrics import lpips

            base = self.references[on].out
            row.lpips = _mean(lpips(_upsampled(out.images, self.lpips_model.min_size),
                                    _upsampled(base.images, self.lpips_model.min_size), self.lpips_model))
        if self.evaluator is not None and out.labels is not None:
            scores = self.evaluator.evaluate(out.images, out.labels)
            row.accuracy, row.fdd = scores.get("accuracy"), scores.get("fdd")


def _upsampled(images: torch.Tensor, min_size: int) -> torch.Tensor:
    """uint8 (N, [F,] H, W, C) images bilinearly enlarged so the short side is at least ``min_size``
    (LPIPS's AlexNet needs 31 px; the built-in digits are 16 px)."""
    h, w = images.shape[-3:-1]
    if min(h, w) >= min_size:
        return images
    scale = -(-min_size // min(h, w))
    x = images.flatten(0, images.dim() - 4).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.reshape(*images.shape[:-3], *x.shape[1:])


def _ssim(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Mean SSIM, or None for images smaller than its 11x11 window."""
    return _mean(ssim(a, b)) if min(a.shape[-3:-1]) >= SSIM_WINDOW else None


def _mean(values: torch.Tensor) -> float:
    return values.double().mean().item()


def run_bench(bench: Bench, methods: Sequence[Method], prepare) -> tuple[list[Row], list[dict]]:
    """Rows (uncached references first) and the methods that could not run here, with the reason."""
    rows = [bench.uncached_row(on) for on in bench.models]
    skipped = []
    for method in tqdm(methods, desc="bench", disable=not bench.progress):
        try:
            rows.append(bench.run(method, prepare))
        except NotApplicable as err:
            skipped.append({"method": method.label, "reason": str(err)})
    return rows, skipped


def rows_as_dicts(rows: Sequence[Row]) -> list[dict]:
    return [asdict(row) for row in rows]


class Preparer:
    """``preparer(method, model)``: the method as (the module to sample with, its cache policy or ``None``, the
    uncached module its timing is compared with). Fits what a method needs per model on its own calibration
    seeds, never the evaluation seeds, with the bench's condition and settings: TeaCache's polynomial (when
    the spec gives none) and MagCache's ratios. The external peers are timed against one diffusers transformer
    per model without a cache."""

    def __init__(self, bench: Bench, calibration_seeds: Sequence[int]):
        self.bench, self.seeds = bench, list(calibration_seeds)
        self._fits: dict[tuple[str, int], object] = {}
        self._plain: dict[int, object] = {}  # model -> its diffusers transformer without a hook

    def __call__(self, method: Method, model):
        if method.cachedit is not None:
            from .cachedit_peers import CacheDitPeer

            sampling = self.bench.sampling
            separate = not sampling.batched_guidance and sampling.guidance_for(model) != 1.0
            peer = CacheDitPeer(model, method.cachedit[0], steps=sampling.make_sampler(model).model_calls,
                                separate_cfg=separate, **dict(method.cachedit[1]))
            return peer, None, self._plain_transformer(model)
        if method.diffusers is not None:
            from .diffusers_peers import DiffusersPeer

            sampler = self.bench.sampling.make_sampler(model)
            if max(sampler.calls_per_step) > 1:  # the peer tells steps and guidance passes apart by timestep
                raise UserError(f"diffusers' hooks take each model call at a new timestep for a step, and "
                                f"{sampler.name} calls the model twice per step, the second time at the next "
                                "step's timestep")
            name, options = method.diffusers[0], dict(method.diffusers[1])
            if name == "magcache":
                options.setdefault("mag_ratios", self._fit("magcache", model))
            return DiffusersPeer(model, name, **options), None, self._plain_transformer(model)
        policy = parse_cache(method.spec)
        if isinstance(policy, TeaCache) and "coef=" not in method.spec:
            policy = dataclasses.replace(policy, coefficients=self._fit("teacache", model))
        return model, policy, model

    def _plain_transformer(self, model):
        from .diffusers_peers import DiffusersPeer

        if id(model) not in self._plain:
            self._plain[id(model)] = DiffusersPeer(model, "none")
        return self._plain[id(model)]

    def _fit(self, what: str, model):
        key = (what, id(model))
        if key not in self._fits:
            condition = self.bench.condition
            for name in ("labels", "prompts"):  # the calibration seeds get conditions the same way
                values = getattr(condition, name)
                if isinstance(values, (list, tuple)):
                    condition = dataclasses.replace(condition, **{name: cycle(values, len(self.seeds))})
            settings = dict(sampling=self.bench.sampling, runtime=self.bench.runtime)
            if what == "teacache":
                self._fits[key] = calibrate_teacache(model, self.seeds, condition, **settings)[0]
            else:
                from .diffusers_peers import calibrate_magcache

                self._fits[key] = calibrate_magcache(model, self.seeds, condition, **settings)
        return self._fits[key]
