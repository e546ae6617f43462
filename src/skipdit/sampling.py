"""``generate()``: seeds -> noise -> conditioning -> guidance -> sampler (+ cache) -> decode.

Sample *i* depends only on seed *i* (its own noise generator), never on the batch it lands in.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .cache import CachePolicy, CacheStats, parse_cache
from .diffusion import SAMPLERS, GaussianDiffusion, SeededNoise, classifier_free_guidance, sample
from .distributed import check_device
from .errors import UserError
from .io import to_uint8, video_to_uint8

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    model, seeds: Sequence[int], labels: Sequence[int] | int | None = None, *,
    prompts: Sequence[str] | str | None = None, negative_prompt: str = "", text_encoder=None,
    num_frames: int | None = None, sampler: str = "ddpm", steps: int = 250, respacing: str | None = None,
    eta: float = 0.0, cfg_scale: float = 1.0, cfg_mode: str = "all", cfg_batched: bool = True,
    cache: str | CachePolicy | None = None, vae=None, batch_size: int | None = None,
    device: str | torch.device | None = None, precision: str = "fp32", compile: bool = False,
    progress: bool = False, callback: Callable | None = None,
) -> Generation:
    """Sample one image (or video) per seed.

    Class models (DiT, Latte) take ``labels``; text models (Latte-T2V) take ``prompts`` (cycled over the
    seeds), a ``negative_prompt`` for the unconditional branch (the official default is ``""``) and a
    ``text_encoder`` (:func:`skipdit.text.load_text_encoder`). Video models make ``num_frames`` frames
    (default: as many as the model was trained on).

    ``steps`` respaces the 1000-step chain ADM-style (``respacing`` overrides it, e.g. ``"ddim50"``).
    ``cache`` is a policy or a spec string such as ``"c2i:N=2"``. ``vae`` decodes latents (see
    :mod:`skipdit.vae`); without it the model is taken to be pixel-space. ``precision`` is ``fp32``,
    ``bf16`` or ``fp16`` autocast; ``compile`` compiles each block with ``torch.compile`` (in place).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("no seeds given")
    check_settings(seeds=seeds, sampler=sampler, steps=steps, eta=eta, cfg_scale=cfg_scale, batch_size=batch_size,
                   num_frames=num_frames)
    # checked before the model moves or anything is drawn; default: where the model is
    device = check_device(device) if device is not None else next(model.parameters()).device
    conditions = _conditions(model, len(seeds), labels, prompts, negative_prompt, text_encoder, cfg_scale)
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    policy = parse_cache(cache)
    if policy is not None:
        policy.check_model(model)
    if vae is not None and vae.latent_channels != model.in_channels:
        raise UserError(f"the VAE has {vae.latent_channels} latent channels, the model takes {model.in_channels}")
    shape = model.sample_shape(num_frames)
    diffusion = GaussianDiffusion.create(respacing or str(steps), learn_sigma=model.config.learn_sigma)
    model = model.to(device).eval()
    if compile:
        _compile_blocks(model)
    batch_size = len(seeds) if batch_size is None else batch_size

    samples, seconds, stats = [], 0.0, None
    for start in range(0, len(seeds), batch_size):
        rows = slice(start, start + batch_size)
        chunk = seeds[rows]
        cond, uncond = conditions.take(rows, device)
        noise = SeededNoise(chunk)
        x = noise(torch.empty(len(chunk), *shape, device=device))
        state = policy.start(model, diffusion.sampling_timesteps()) if policy is not None else None
        model_fn = _denoiser(model, cond, uncond, state, cfg_scale, cfg_mode, cfg_batched)
        _sync(device)
        tic = time.perf_counter()
        with torch.inference_mode(), _autocast(device, precision):
            out = sample(
                sampler, model_fn, x, diffusion, eta=eta, noise=noise, callback=callback, cache_state=state,
                progress=progress,
            )
        _sync(device)
        seconds += time.perf_counter() - tic
        samples.append(out.float().cpu())
        run_stats = state.stats if state is not None else CacheStats.uncached(diffusion.num_steps, model.num_units)
        stats = run_stats if stats is None else stats + run_stats

    latents = torch.cat(samples)
    decoded = latents if vae is None else _decode(vae, latents, batch_size)
    if decoded.ndim == 5 and getattr(model.config, "num_frames", None) == 1:
        decoded = decoded[:, :, 0]  # a video model made for one frame is an image model (text-to-image)
    pixels = video_to_uint8(decoded) if decoded.ndim == 5 else to_uint8(decoded)
    return Generation(pixels, latents, seeds, conditions.labels, conditions.prompts, seconds, stats,
                      policy and policy.spec())


def check_settings(
    *, seeds: Sequence[int] = (0,), sampler: str = "ddpm", steps: int = 250, eta: float = 0.0,
    cfg_scale: float = 1.0, batch_size: int | None = None, num_frames: int | None = None,
) -> None:
    """One :class:`UserError` for a setting :func:`generate` cannot use. Without it ``steps=0`` fails deep in
    the respacing with a message about specs, ``batch_size=0`` runs nothing and NaN guidance or eta runs to the
    end and decodes all-black images."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
    _check_int(steps, "steps", minimum=1)
    _check_int(batch_size, "batch size", minimum=1)
    _check_int(num_frames, "num_frames", minimum=1)
    if not math.isfinite(eta) or eta < 0:
        raise UserError(f"eta must be a finite number >= 0, got {eta}")
    if not math.isfinite(cfg_scale) or cfg_scale < 1:
        raise UserError(f"guidance scale must be a finite number >= 1 (1 disables guidance), got {cfg_scale}")
    bad = next((s for s in seeds if not -(2**63) <= s <= 2**64 - 1), None)  # what torch.Generator takes
    if bad is not None:
        raise UserError(f"seed {bad} is out of range: torch takes seeds in -2**63..2**64-1")


def _check_int(value, name: str, *, minimum: int) -> None:
    """``value`` is None (the default) or an integer >= ``minimum`` (a bool is not a count)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")


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


def _conditions(model, n, labels, prompts, negative_prompt, text_encoder, cfg_scale) -> _Conditions:
    if getattr(model, "conditioning", "class") == "text":
        if labels is not None:
            raise UserError("this is a text-to-video model: pass prompts, not class labels")
        if prompts is None:
            raise UserError("this is a text-conditioned model: pass prompts")
        if text_encoder is None:
            raise UserError("a text-conditioned model needs a text encoder (skipdit.text.load_text_encoder)")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise UserError("no prompts given")
        prompts = [prompts[k % len(prompts)] for k in range(n)]
        emb, mask = text_encoder.encode(prompts)
        neg_emb, neg_mask = text_encoder.encode([negative_prompt])
        uncond = (neg_emb.expand(n, -1, -1), neg_mask.expand(n, -1))
        return _Conditions((emb, mask), uncond, prompts=prompts)
    if prompts is not None:
        raise UserError("this is a class-conditional model: pass class labels, not prompts")
    num_classes = getattr(model.config, "num_classes", 0)
    if not num_classes:
        if labels is not None:
            raise UserError("this model is unconditional: it takes no class labels")
        if cfg_scale != 1.0:
            raise UserError("classifier-free guidance needs a conditional model; use cfg_scale 1")
        return _Conditions((None,), (None,))
    if labels is None:
        raise UserError(f"this model is class-conditional: pass labels (0..{num_classes - 1})")
    labels = [int(labels)] * n if isinstance(labels, int) else [int(y) for y in labels]
    if len(labels) != n:
        raise UserError(f"{len(labels)} labels for {n} seeds")
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise UserError(f"class label {bad[0]} out of range: this model has classes 0..{num_classes - 1}")
    y = torch.tensor(labels)
    return _Conditions((y,), (torch.full_like(y, model.null_label),), labels=labels)


def _denoiser(model, cond, uncond, state, cfg_scale, cfg_mode, cfg_batched):
    """The sampler's ``model_fn(x, t)``: the model with this run's cache state, guided."""

    def cached(x, t, *c):
        return model(x, t, *c, cache=state)

    guided = classifier_free_guidance(cached, cfg_scale, model.in_channels, mode=cfg_mode, batched=cfg_batched)
    return lambda x, t: guided(x, t, cond, uncond)


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


BLOCK_LISTS = ("blocks", "transformer_blocks", "temporal_transformer_blocks")


def _compile_blocks(model) -> None:
    """Regional compilation: each block is compiled on its own, so caches that run a subset of the
    blocks, or swap in a cached hidden state, never trigger a recompile of a whole-model graph."""
    for block in (b for name in BLOCK_LISTS for b in getattr(model, name, ())):
        if not getattr(block, "_skipdit_compiled", False):
            block.compile()
            block._skipdit_compiled = True
