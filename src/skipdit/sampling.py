"""``generate()``: seeds -> noise -> guidance -> sampler (+ cache) -> decode.

Sample *i* depends only on seed *i* (its own noise generator), never on the batch it lands in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .cache import CachePolicy, CacheStats, parse_cache
from .diffusion import GaussianDiffusion, SeededNoise, classifier_free_guidance, sample
from .io import to_uint8

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Generation:
    """The result of :func:`generate`. ``seconds`` is the wall time of the denoising loops only
    (no VAE), the quantity the paper's latency figures measure (reference §E.3)."""

    images: torch.Tensor  # uint8 (N, H, W, C), decoded
    samples: torch.Tensor  # float (N, C, h, w), the sampler's output in model space, on the CPU
    seeds: list[int]
    labels: list[int]
    seconds: float
    stats: CacheStats  # what ran: full / cached steps, unit evaluations (all full without a cache)
    cache: str | None  # canonical spec of the cache used


def generate(
    model, seeds: Sequence[int], labels: Sequence[int] | int, *, sampler: str = "ddpm", steps: int = 250,
    respacing: str | None = None, eta: float = 0.0, cfg_scale: float = 1.0, cfg_mode: str = "all",
    cfg_batched: bool = True, cache: str | CachePolicy | None = None, vae=None, batch_size: int | None = None,
    device: str | torch.device | None = None, precision: str = "fp32", compile: bool = False,
    progress: bool = False, callback: Callable | None = None,
) -> Generation:
    """Sample one image per seed.

    ``steps`` respaces the 1000-step chain ADM-style (``respacing`` overrides it, e.g. ``"ddim50"``).
    ``cache`` is a policy or a spec string such as ``"c2i:N=2"``. ``vae`` decodes latents (see
    :mod:`skipdit.vae`); without it the model is taken to be pixel-space. ``precision`` is ``fp32``,
    ``bf16`` or ``fp16`` autocast; ``compile`` compiles each block with ``torch.compile`` (in place).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds given")
    labels = [int(labels)] * len(seeds) if isinstance(labels, int) else [int(y) for y in labels]
    if len(labels) != len(seeds):
        raise ValueError(f"{len(labels)} labels for {len(seeds)} seeds")
    num_classes = model.config.num_classes
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise ValueError(f"class label {bad[0]} out of range: this model has classes 0..{num_classes - 1}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    policy = parse_cache(cache)
    if policy is not None:
        policy.check_model(model)
    if vae is not None and vae.latent_channels != model.in_channels:
        raise ValueError(f"the VAE has {vae.latent_channels} latent channels, the model takes {model.in_channels}")
    diffusion = GaussianDiffusion.create(respacing or str(steps), learn_sigma=model.config.learn_sigma)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    if compile:
        _compile_blocks(model)
    size = model.config.input_size
    batch_size = batch_size or len(seeds)

    samples, seconds, stats = [], 0.0, None
    for start in range(0, len(seeds), batch_size):
        chunk, y = seeds[start : start + batch_size], torch.tensor(labels[start : start + batch_size], device=device)
        noise = SeededNoise(chunk)
        x = noise(torch.empty(len(chunk), model.in_channels, size, size, device=device))
        state = policy.start(model, diffusion.sampling_timesteps()) if policy is not None else None
        model_fn = _denoiser(model, y, state, cfg_scale, cfg_mode, cfg_batched)
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
    decoded = latents if vae is None else vae.decode(latents, batch_size=batch_size)
    return Generation(to_uint8(decoded), latents, seeds, labels, seconds, stats, policy and policy.spec())


def _denoiser(model, y, state, cfg_scale, cfg_mode, cfg_batched):
    """The sampler's ``model_fn(x, t)``: the model with this run's cache state, guided, for labels ``y``."""

    def cached(x, t, y):
        return model(x, t, y, cache=state)

    guided = classifier_free_guidance(
        cached, cfg_scale, model.null_label, model.in_channels, mode=cfg_mode, batched=cfg_batched
    )
    return lambda x, t: guided(x, t, y)


def _autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _compile_blocks(model) -> None:
    """Regional compilation: each block is compiled on its own, so caches that run a subset of the
    blocks, or swap in a cached hidden state, never trigger a recompile of a whole-model graph."""
    for block in model.blocks:
        if not getattr(block, "_skipdit_compiled", False):
            block.compile()
            block._skipdit_compiled = True
