"""Text-to-image with Hunyuan-DiT through diffusers, with Skip-Cache (reference §A.5, §C).

Hunyuan-DiT has long skips natively; Skip-DiT runs its weights unchanged and adds only the cache
(:mod:`skipdit.cache.adapters`). Users run it as diffusers' ``HunyuanDiTPipeline``, loaded here from a
local folder; nothing is downloaded.

    pipe = load_hunyuan("HunyuanDiT-v1.2-Diffusers/", device="cuda", precision="fp16")
    out = generate_hunyuan(pipe, seeds=range(4), prompts="一只可爱的猫", cache="t2i:N=2")

Sample *i* depends only on seed *i*: each image draws its latents and its DDPM noise from its own
generator. ``seconds`` times the denoising loop only: prompts are encoded before it and latents
decoded after it, as in :func:`skipdit.generate`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from . import cache as skip_cache
from .cache import CacheStats, parse_cache
from .errors import UserError
from .io import to_uint8
from .sampling import PRECISIONS, Generation, cycle


def load_hunyuan(model_dir: str | os.PathLike, *, device: str | torch.device = "cpu", precision: str = "fp32"):
    """A ``HunyuanDiTPipeline`` from a local diffusers folder (``model_index.json`` and its parts)."""
    path = Path(model_dir)
    if not (path / "model_index.json").is_file():
        raise UserError(f"no diffusers pipeline at {path}: expected model_index.json (a local copy of "
                                "e.g. Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers)")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    from .convert.files import check_json_files, check_weight_files

    # model_index.json, each part's configs and weight headers: a malformed or truncated one is named here
    check_json_files(path, depth=1)
    for part in sorted(p for p in path.iterdir() if p.is_dir()):
        check_weight_files(part)
    try:
        from diffusers import HunyuanDiTPipeline
    except ImportError as err:
        raise UserError("Hunyuan-DiT needs diffusers and transformers: pip install 'skipdit[diffusers,text]'") \
            from err
    dtype = PRECISIONS[precision] or torch.float32
    try:
        pipe = HunyuanDiTPipeline.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
    except Exception as err:  # diffusers raises several types for incomplete folders
        lines = str(err).strip().splitlines()  # diffusers' message can run to a paragraph: its first line
        reason = lines[0] if lines else type(err).__name__
        raise UserError(f"cannot load the Hunyuan-DiT pipeline in {path}: {reason}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.inference_mode()
def generate_hunyuan(
    pipe, seeds: Sequence[int], prompts: Sequence[str] | str, *, negative_prompt: str | None = None,
    steps: int = 100, cfg_scale: float = 6.0, size: int | None = None, cache=None, progress: bool = False,
) -> Generation:
    """One image per seed, prompts cycled over the seeds. The defaults are the official sampling
    settings (DDPM-100, guidance 6); ``size`` is the image side (default: the pipeline's)."""
    seeds = [int(s) for s in seeds]
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not seeds or not prompts:
        raise UserError("no seeds or no prompts given")
    prompts = cycle(prompts, len(seeds))
    policy = parse_cache(cache)
    pipe.set_progress_bar_config(disable=not progress)
    device, dtype = pipe._execution_device, pipe.transformer.dtype
    text = {}
    for index, (suffix, length) in enumerate((("", 77), ("_2", 256))):  # CLIP-style BERT, then mT5 (§A.5)
        emb, neg, mask, neg_mask = pipe.encode_prompt(
            prompts, device=device, dtype=dtype, do_classifier_free_guidance=cfg_scale > 1,
            negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
            max_sequence_length=length, text_encoder_index=index,
        )
        text.update({f"prompt_embeds{suffix}": emb, f"negative_prompt_embeds{suffix}": neg,
                     f"prompt_attention_mask{suffix}": mask, f"negative_prompt_attention_mask{suffix}": neg_mask})
    if policy is not None:
        skip_cache.enable(pipe, policy)
    else:
        skip_cache.disable(pipe)
    extra = {} if size is None else {"height": size, "width": size, "use_resolution_binning": False}
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    latents = pipe(num_inference_steps=steps, guidance_scale=cfg_scale, generator=generators,
                   output_type="latent", **text, **extra).images
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - tic
    stats = skip_cache.stats(pipe) if policy is not None else CacheStats.uncached(steps, len(pipe.transformer.blocks))
    skip_cache.disable(pipe)
    decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    images = to_uint8(decoded.float().cpu())
    return Generation(images, decoded.float().cpu(), seeds, None, prompts, seconds, stats,
                      policy and policy.spec())
