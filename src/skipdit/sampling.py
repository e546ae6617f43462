"""``generate()``: seeds -> noise -> conditioning -> guidance -> sampler (+ cache) -> decode.

    out = generate(model, seeds=range(8), condition=Condition(labels=207),
                   sampling=Sampling(sampler="ddim", steps=50, guidance_scale=4.0),
                   runtime=Runtime(device="cuda", precision="bf16"), cache="c2i:N=2", vae=vae)

:class:`Sampling` says how to sample and :class:`Runtime` where and how fast; each holds its defaults, the
only ones: every subcommand, the bench and tuning build these two instead of keeping their own.

Sample *i* depends only on seed *i* (its own noise generator), never on the batch it lands in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from .cache import CachePolicy, CacheStats, parse_cache
from .diffusion import (
    SAMPLERS,
    GaussianDiffusion,
    Sampler,
    SeededNoise,
    classifier_free_guidance,
    make_sampler,
    space_timesteps,
)
from .diffusion.guidance import CFG_MODES
from .diffusion.samplers import (
    CHAIN_SAMPLERS,
    DIFFUSERS_SAMPLER,
    check_sampler,
    default_spacing,
    default_steps,
    sampler_name,
)
from .distributed import check_device
from .errors import UserError
from .io import to_uint8, video_to_uint8

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# the official samplers of DiT (ADM DDPM-250) and Latte (DDIM-50); 20 for the solvers and any diffusers scheduler
DEFAULT_STEPS = {name: default_steps(name) for name in (*SAMPLERS, DIFFUSERS_SAMPLER)}
DEFAULT_GUIDANCE = 4.0  # the official DiT sampling scale (reference §C)

T = TypeVar("T")


def cycle(values: Sequence[T], n: int) -> list[T]:
    """``values`` repeated to length ``n`` (labels and prompts are cycled over the seeds)."""
    if not values:
        raise UserError("nothing to cycle over the seeds")
    return [values[k % len(values)] for k in range(n)]


def _check_int(value, name: str, *, minimum: int) -> None:
    """``value`` is None (the default) or an integer >= ``minimum`` (a bool is not a count)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Sampling:
    """How to sample: the sampler, its steps, guidance, and the frames of a video.

    ``sampler`` is one of ``ddpm``, ``ddim`` (ADM's chain), ``dpm++2m``, ``unipc`` (DPM-Solver++(2M), UniPC-bh2),
    ``euler``, ``heun`` (EDM's σ-space samplers), ``diffusers:<Scheduler>`` (any scheduler of diffusers'
    ``DiTPipeline``, e.g. ``diffusers:DPMSolverMultistepScheduler``), or a diffusers scheduler *object*: a
    template, configured as the user likes on DiT's chain, of which every run samples with a fresh copy
    (see :mod:`skipdit.diffusion.diffusers_scheduler`). ``steps`` defaults to :data:`DEFAULT_STEPS` (250 for
    ddpm, 50 for ddim, 20 for the others).

    The step list: ddpm and ddim respace the 1000-step chain ADM-style, ``respacing`` overriding ``steps``
    (``"ddim50"``, ``"leading100+1"``); the other samplers take a ``spacing`` named as diffusers names it,
    ``"linspace"`` (their default, as diffusers'), ``"leading"``, ``"trailing"`` or ``"karras"`` (Karras σ,
    ρ = 7); for a scheduler object its own config decides. ``guidance_scale`` defaults to 4 for conditional
    models and is off (1) for unconditional ones; ``guidance_mode="dit_legacy"`` guides 3 channels as the
    official DiT does; ``batched_guidance=False`` runs cond and uncond as two calls of N instead of one of 2N.
    ``num_frames``: frames of a video model (default: as many as it was trained on).
    """

    sampler: str | object = "ddpm"
    steps: int | None = None
    respacing: str | None = None
    spacing: str | None = None
    eta: float = 0.0
    guidance_scale: float | None = None
    guidance_mode: str = "all"
    batched_guidance: bool = True
    num_frames: int | None = None

    def __post_init__(self):
        check_sampler(self.sampler, spacing=self.spacing, respacing=self.respacing)  # names the valid ones
        _check_int(self.steps, "steps", minimum=1)
        _check_int(self.num_frames, "num_frames", minimum=1)
        if not isinstance(self.eta, numbers.Real) or not math.isfinite(self.eta) or self.eta < 0:
            raise UserError(f"eta must be a finite number >= 0, got {self.eta}")
        if self.eta and self.sampler != "ddim":
            raise UserError(f"eta applies to the ddim sampler only, not {self.sampler_name}")
        scale = self.guidance_scale
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
                                  or not math.isfinite(scale) or scale < 1):
            raise UserError(f"guidance scale must be a finite number >= 1 (1 disables guidance), got {scale}")
        if self.guidance_mode not in CFG_MODES:
            raise UserError(f"unknown guidance mode {self.guidance_mode!r}; valid: {', '.join(CFG_MODES)}")
        if self.respacing is not None:
            space_timesteps(1000, self.respacing)  # a malformed respacing fails here, naming the valid forms
        if self.sampler_name not in CHAIN_SAMPLERS:
            self.make_sampler()  # a step count the spacing cannot take fails here, not after the model loads

    @property
    def sampler_name(self) -> str:
        """The sampler's name (``diffusers:<Class>`` for a scheduler object), for reports."""
        return sampler_name(self.sampler)

    @property
    def num_steps(self) -> int:
        return default_steps(self.sampler) if self.steps is None else self.steps

    @property
    def spacing_used(self) -> str | None:
        """The step list of a solver (the default filled in); None for ddpm, ddim and scheduler objects."""
        return self.spacing or default_spacing(self.sampler)

    @property
    def timestep_respacing(self) -> str:
        """The respacing of the 1000-step chain ddpm and ddim sample on."""
        return self.respacing or str(self.num_steps)

    def guidance_for(self, model) -> float:
        """The scale used on ``model``: the default is off for an unconditional model."""
        unconditional = model.conditioning == "class" and not model.num_classes
        if self.guidance_scale is None:
            return 1.0 if unconditional else DEFAULT_GUIDANCE
        if unconditional and self.guidance_scale != 1.0:
            raise UserError("classifier-free guidance needs a conditional model; use guidance_scale 1")
        return float(self.guidance_scale)

    def diffusion(self, model) -> GaussianDiffusion:
        """The respaced chain of ddpm and ddim (the other samplers run on the whole chain: :meth:`make_sampler`)."""
        if self.sampler_name not in CHAIN_SAMPLERS:
            raise UserError(f"{self.sampler_name} samples on the whole chain, not a respaced one")
        return GaussianDiffusion.create(self.timestep_respacing, learn_sigma=model.learn_sigma)

    def make_sampler(self, model=None) -> Sampler:
        """The sampler on its step list (``model`` says whether the network learns DDPM's variance; without one,
        the step list is the same)."""
        return make_sampler(self.sampler, steps=self.num_steps, spacing=self.spacing, respacing=self.respacing,
                            eta=self.eta, learn_sigma=True if model is None else model.learn_sigma)

    def cache_timesteps(self, model=None) -> list[int]:
        """The timesteps a cache plans on: one per step, each step's first model call, rounded to integers
        (:meth:`skipdit.diffusion.Sampler.cache_timesteps`)."""
        return self.make_sampler(model).cache_timesteps()

    def warm_up(self) -> Sampling:
        """Two steps of the same sampler (any respacing dropped): a warm-up run before timed ones."""
        return self.replace(steps=2, respacing=None)

    def replace(self, **changes) -> Sampling:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Runtime:
    """Where and how fast: ``device`` (default: where the model is; the model is moved there), autocast
    ``precision`` (``fp32``, ``bf16``, ``fp16``), ``compile`` (regional: each repeated block, once, in place),
    ``batch_size`` (default: all seeds in one batch) and a ``progress`` bar."""

    device: str | torch.device | None = None
    precision: str = "fp32"
    compile: bool = False
    batch_size: int | None = None
    progress: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        _check_int(self.batch_size, "batch size", minimum=1)

    def replace(self, **changes) -> Runtime:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Condition:
    """What to sample: class ``labels`` (one, or one per seed) for class models; ``prompts`` (cycled over the
    seeds), the ``negative_prompt`` of the unconditional branch (the official default is ``""``) and the
    ``text_encoder`` (:func:`skipdit.text.load_text_encoder`) for text models; nothing for unconditional ones."""

    labels: int | Sequence[int] | None = None
    prompts: str | Sequence[str] | None = None
    negative_prompt: str = ""
    text_encoder: object = None


@dataclass
class Generation:
    """The result of :func:`generate`. ``seconds`` is the wall time of the denoising loops only
    (no VAE, no text encoder), the quantity the paper's latency figures measure (reference §E.3)."""

    images: torch.Tensor  # uint8 (N, H, W, C) decoded images, or (N, F, H, W, C) frames of video models
    # (a video model with num_frames=1 is an image model: its images are (N, H, W, C))
    samples: torch.Tensor  # float (N, C, [F,] h, w), the sampler's output in model space, on the CPU
    seeds: list[int]
    labels: list[int] | None  # class models
    prompts: list[str] | None  # text models
    seconds: float
    stats: CacheStats  # what ran: full / cached steps, unit evaluations (all full without a cache)
    cache: str | None  # canonical spec of the cache used

    @property
    def is_video(self) -> bool:
        return self.images.ndim == 5


def generate(
    model, seeds: Sequence[int], condition: Condition | int | Sequence[int] | None = None, *,
    sampling: Sampling = Sampling(), runtime: Runtime = Runtime(), cache: str | CachePolicy | None = None,
    vae=None, callback: Callable | None = None,
) -> Generation:
    """Sample one image (or video) per seed with ``model`` (any :class:`skipdit.protocol.DiffusionModel`).

    ``condition`` is a :class:`Condition`, or class labels alone. ``cache`` is a policy or a spec string such
    as ``"c2i:N=2"``. ``vae`` decodes latents (see :mod:`skipdit.vae`); without it the model is taken to be
    pixel-space. ``callback(step, x, x0)`` sees every step. The model is moved to ``runtime.device`` and its
    training mode is restored afterwards.
    """
    policy = parse_cache(cache)
    if policy is not None:
        policy.check_model(model)  # before the model moves or the text encoder runs
    if vae is not None and vae.latent_channels != model.in_channels:
        raise UserError(f"the VAE has {vae.latent_channels} latent channels, the model takes {model.in_channels}")
    run = denoise(model, seeds, condition, sampling=sampling, runtime=runtime, callback=callback,
                  start_cache=None if policy is None else lambda timesteps: policy.start(model, timesteps))
    decoded = run.latents if vae is None else _decode(vae, run.latents, runtime.batch_size or len(run.seeds))
    if decoded.ndim == 5 and model.num_frames == 1:
        decoded = decoded[:, :, 0]  # a video model made for one frame is an image model (text-to-image)
    pixels = video_to_uint8(decoded) if decoded.ndim == 5 else to_uint8(decoded)
    return Generation(pixels, run.latents, run.seeds, run.labels, run.prompts, run.seconds, run.stats,
                      policy and policy.spec())


@dataclass
class Denoised:
    """What :func:`denoise` returns: the sampler's outputs and the run's account."""

    latents: torch.Tensor  # float (N, C, [F,] h, w) on the CPU
    seeds: list[int]
    labels: list[int] | None
    prompts: list[str] | None
    seconds: float
    stats: CacheStats


def denoise(
    model, seeds: Sequence[int], condition: Condition | int | Sequence[int] | None = None, *,
    sampling: Sampling = Sampling(), runtime: Runtime = Runtime(), start_cache: Callable | None = None,
    callback: Callable | None = None,
) -> Denoised:
    """The sampling loops of :func:`generate`, without decoding. ``start_cache(timesteps)`` makes the cache
    of one batch: anything with ``begin_step(k)``, ``branch(name)`` (what the model's forward gets as
    ``cache=``), ``guided`` (whether the step under way runs guidance; where it does not, the conditional
    branch runs alone) and ``stats``, such as a :class:`~skipdit.cache.CacheState`, or the recorders of
    :mod:`skipdit.tuning`."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("no seeds given")
    bad = next((s for s in seeds if not -(2**63) <= s <= 2**64 - 1), None)  # what torch.Generator takes
    if bad is not None:
        raise UserError(f"seed {bad} is out of range: torch takes seeds in -2**63..2**64-1")
    if not isinstance(condition, Condition):
        condition = Condition(labels=condition)
    scale = sampling.guidance_for(model)
    # checked before the model moves or anything is drawn; default: where the model is
    device = check_device(runtime.device) if runtime.device is not None else next(model.parameters()).device
    conditions = _conditions(model, len(seeds), condition, scale)
    shape = model.sample_shape(sampling.num_frames)
    sampler = sampling.make_sampler(model)
    batch_size = runtime.batch_size or len(seeds)
    was_training = model.training
    model = model.to(device).eval()
    if runtime.compile:
        _compile_blocks(model)
    latents, seconds, stats = [], 0.0, None
    try:
        for start in range(0, len(seeds), batch_size):
            rows = slice(start, start + batch_size)
            chunk = seeds[rows]
            cond, uncond = conditions.take(rows, device)
            noise = SeededNoise(chunk)
            x = noise(torch.empty(len(chunk), *shape, device=device))
            # the cache plans on the timesteps the sampler evaluates, one per step (rounded to integers)
            state = start_cache(sampler.cache_timesteps()) if start_cache is not None else None
            model_fn = _denoiser(model, cond, uncond, state, scale, sampling)
            _sync(device)
            tic = time.perf_counter()
            with torch.inference_mode(), _autocast(device, runtime.precision):
                out = sampler(model_fn, x, noise=noise, callback=callback, cache_state=state,
                              progress=runtime.progress)
            _sync(device)
            seconds += time.perf_counter() - tic
            latents.append(out.float().cpu())
            run_stats = state.stats if state is not None else CacheStats.uncached(sampler.num_steps, model.num_units)
            stats = run_stats if stats is None else stats + run_stats
    finally:
        model.train(was_training)
    return Denoised(torch.cat(latents), seeds, conditions.labels, conditions.prompts, seconds, stats)


@dataclass
class _Conditions:
    """Per-sample conditioning of a whole :func:`generate` call, cut into batches by :meth:`take`."""

    cond: tuple[torch.Tensor | None, ...]  # (labels,) | (embeddings, mask) | (None,)
    uncond: tuple[torch.Tensor | None, ...]
    labels: list[int] | None = None
    prompts: list[str] | None = None

    def take(self, rows: slice, device: torch.device):
        cut = lambda c: tuple(None if v is None else v[rows].to(device) for v in c)  # noqa: E731
        return cut(self.cond), cut(self.uncond)


def _conditions(model, n: int, condition: Condition, scale: float) -> _Conditions:
    labels, prompts = condition.labels, condition.prompts
    if model.conditioning == "text":
        if labels is not None:
            raise UserError(f"this is a {model.task} model: pass prompts, not class labels")
        if prompts is None:
            raise UserError("this is a text-conditioned model: pass prompts")
        if condition.text_encoder is None:
            raise UserError("a text-conditioned model needs a text encoder (skipdit.text.load_text_encoder)")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise UserError("no prompts given")
        prompts = cycle(prompts, n)
        emb, mask = condition.text_encoder.encode(prompts)
        neg_emb, neg_mask = condition.text_encoder.encode([condition.negative_prompt])
        uncond = (neg_emb.expand(n, -1, -1), neg_mask.expand(n, -1))
        return _Conditions((emb, mask), uncond, prompts=prompts)
    if prompts is not None:
        raise UserError("this is a class-conditional model: pass class labels, not prompts")
    num_classes = model.num_classes
    if not num_classes:
        if labels is not None:
            raise UserError("this model is unconditional: it takes no class labels")
        return _Conditions((None,), (None,))
    if labels is None:
        raise UserError(f"this model is class-conditional: pass labels (0..{num_classes - 1})")
    labels = [int(labels)] * n if isinstance(labels, numbers.Integral) else [int(y) for y in labels]
    if len(labels) != n:
        raise UserError(f"{len(labels)} labels for {n} seeds")
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise UserError(f"class label {bad[0]} out of range: this model has classes 0..{num_classes - 1}")
    y = torch.tensor(labels)
    return _Conditions((y,), (torch.full_like(y, model.null_label),), labels=labels)


def _denoiser(model, cond, uncond, state, scale: float, sampling: Sampling):
    """The sampler's ``model_fn(x, t)``: the model with this run's cache state (per guidance branch), guided on
    the steps the cache state says are (every step without one)."""

    def cached(x, t, *c, branch: str):
        return model(x, t, *c, cache=None if state is None else state.branch(branch))

    guided = classifier_free_guidance(cached, scale, model.in_channels, mode=sampling.guidance_mode,
                                      batched=sampling.batched_guidance)
    return lambda x, t: guided(x, t, cond, uncond, guide=state is None or state.guided)


def _decode(vae, latents: torch.Tensor, batch_size: int) -> torch.Tensor:
    """VAE-decode images (N, C, h, w) or videos (N, C, F, h, w) frame by frame."""
    if latents.ndim == 4:
        return vae.decode(latents, batch_size=batch_size)
    n, _, frames = latents.shape[:3]
    flat = vae.decode(latents.transpose(1, 2).flatten(0, 1), batch_size=batch_size)  # (N*F, 3, H, W)
    return flat.unflatten(0, (n, frames)).transpose(1, 2)


def _autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_COMPILED: weakref.WeakSet = weakref.WeakSet()  # blocks compiled in place by an earlier run


def _compile_blocks(model) -> None:
    """Regional compilation: each block is compiled on its own, so caches that run a subset of the
    blocks, or swap in a cached hidden state, never trigger a recompile of a whole-model graph."""
    for block in model.repeated_blocks():
        if block not in _COMPILED:
            block.compile()
            _COMPILED.add(block)
