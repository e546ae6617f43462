"""``skipdit sample`` as a library call: sample, optionally against the uncached run, and write a folder.

    loaded = load_for_sampling(ModelRequest(model="digits/Skip-DiT"))
    job = sample_to_folder(loaded, range(8), loaded.condition(8), "samples/", cache="skip:N=2", compare=True)
    print(job.result.stats.summary(), job.comparison.speedup)

The folder gets one file per sample (PNG; mp4 / gif per video), a grid, with ``compare=True`` the uncached
samples in ``uncached/``, and ``run.json``: what was run (the settings ``sample-many`` fingerprints), what the
cache did, the timings and the provenance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .cache import parse_cache
from .compare import Comparison, compare_uncached
from .errors import UserError
from .io import VIDEO_FORMATS, atomic_write, save_grid, save_image, save_samples, save_video_grid, save_videos
from .loading import Loaded
from .provenance import identity, provenance
from .sample_many import SAMPLE_SETTINGS, settings_record
from .sampling import Condition, Generation, Runtime, Sampling, generate
from .savings import warn_if_plan_saves_nothing, warn_if_saves_nothing

HUNYUAN_STEPS = 100  # the reference's Hunyuan-DiT setting (DDPM-100)
HUNYUAN_GUIDANCE = 6.0
HUNYUAN_PROMPT = "一只可爱的猫"


@dataclass
class SampleRun:
    """What :func:`sample_to_folder` did: the (cached) result, the comparison with the uncached run if asked,
    the files written (a short description) and the report's path."""

    result: Generation
    comparison: Comparison | None
    saved: str
    report: Path
    warned: bool  # a warning that the cache saves nothing was logged


def check_formats(formats: Sequence[str]) -> list[str]:
    formats = [f.strip() for f in formats if f.strip()]
    bad = [f for f in formats if f not in VIDEO_FORMATS]
    if bad or not formats:
        raise UserError(f"video formats are {', '.join(VIDEO_FORMATS)}, got {', '.join(formats) or 'none'}")
    return formats


def sample_to_folder(
    loaded: Loaded, seeds: Sequence[int], condition: Condition, out, *, sampling: Sampling = Sampling(),
    runtime: Runtime = Runtime(), cache=None, compare: bool = False, repeats: int = 3,
    formats: Sequence[str] = ("mp4", "gif"), fps: int = 8, callback: Callable | None = None,
) -> SampleRun:
    """Sample ``seeds`` with ``loaded`` into the folder ``out``; with ``compare``, also uncached (``repeats``
    interleaved timed rounds after a warm-up, see :mod:`skipdit.compare`). ``callback(step, x, x0)`` sees every
    step of every run, the warm-ups included (:func:`skipdit.generate`)."""
    policy = parse_cache(cache)
    if compare and policy is None:
        raise UserError("comparing with the uncached run needs a cache")
    formats = check_formats(formats)
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise UserError(f"fps must be an integer >= 1, got {fps!r}")
    model = loaded.model
    seeds = list(seeds)
    spec = cache if isinstance(cache, str) or policy is None else policy.spec()  # what warnings call it
    planned = warn_if_plan_saves_nothing(spec, model, sampling) is not None
    out = Path(out)

    def run(with_cache, settings: Sampling) -> Generation:
        quiet = runtime if settings is sampling else runtime.replace(progress=False)
        return generate(model, seeds, condition, sampling=settings, runtime=quiet, cache=with_cache, vae=loaded.vae,
                        callback=callback)

    comparison = compare_uncached(run, policy, sampling, repeats) if compare else None
    result = comparison.cached if comparison else run(policy, sampling)
    saved = write_samples(result, out, formats, fps)
    warned = planned
    if policy is not None and not planned:
        warned = warn_if_saves_nothing(spec, result.stats, policy) is not None
    report = {"task": loaded.task, "seeds": seeds, "labels": result.labels, "prompts": result.prompts,
              "cache": result.cache, "seconds": result.seconds,
              "stats": {**asdict(result.stats), "ideal_speedup": result.stats.ideal_speedup}}
    if comparison is not None:
        write_samples(comparison.uncached, out / "uncached", formats, fps)
        report.update(comparison.report())
    record = settings_record(model, sampling, runtime, condition)
    recorded = {k: record[k] for k in (*SAMPLE_SETTINGS, "spacing") if k in record}  # spacing: solvers only
    report["settings"] = {"model": loaded.request.identity(), "model_preset": loaded.request.source()[1],
                          "vae": identity(loaded.request.vae), **recorded,
                          "cache": None if policy is None else policy.spec()}
    report["provenance"] = provenance(runtime.device or next(model.parameters()).device)
    path = write_report(out / "run.json", report)
    return SampleRun(result, comparison, saved, path, warned)


def hunyuan_to_folder(
    pipe, model_dir, seeds: Sequence[int], out, *, prompts: Sequence[str] | None = None,
    negative_prompt: str | None = None, steps: int | None = None, guidance_scale: float | None = None,
    size: int | None = None, cache=None, compare: bool = False, repeats: int = 3, progress: bool = False,
    device: str = "cpu",
) -> SampleRun:
    """Text-to-image with a Hunyuan-DiT pipeline (:func:`skipdit.hunyuan.load_hunyuan`) into ``out``, as
    :func:`sample_to_folder` does for skipdit's models; the defaults are the reference's (DDPM-100, guidance 6)."""
    from .hunyuan import generate_hunyuan

    policy = parse_cache(cache)
    if compare and policy is None:
        raise UserError("comparing with the uncached run needs a cache")
    seeds = list(seeds)
    sampling = Sampling(steps=HUNYUAN_STEPS if steps is None else steps,
                        guidance_scale=HUNYUAN_GUIDANCE if guidance_scale is None else guidance_scale)
    settings = dict(prompts=list(prompts or [HUNYUAN_PROMPT]), negative_prompt=negative_prompt or None, size=size)

    def run(with_cache, s: Sampling) -> Generation:
        return generate_hunyuan(pipe, seeds, steps=s.num_steps, cfg_scale=s.guidance_scale, cache=with_cache,
                                progress=progress and s is sampling, **settings)

    comparison = compare_uncached(run, policy, sampling, repeats, warm_up=sampling.replace(steps=2)) \
        if compare else None
    result = comparison.cached if comparison else run(policy, sampling)
    out = Path(out)
    _write_t2i(result, out)
    warned = policy is not None and warn_if_saves_nothing(cache, result.stats, policy) is not None
    report = {"task": "t2i", "seeds": seeds, "prompts": result.prompts, "cache": result.cache,
              "seconds": result.seconds, "stats": {**asdict(result.stats), "ideal_speedup": result.stats.ideal_speedup}}
    if comparison is not None:
        _write_t2i(comparison.uncached, out / "uncached")
        report.update(comparison.report())
    report["settings"] = {"model": identity(model_dir), **settings, "steps": sampling.num_steps,
                          "cfg_scale": sampling.guidance_scale, "cache": None if policy is None else policy.spec()}
    report["provenance"] = provenance(device)
    path = write_report(out / "run.json", report)
    return SampleRun(result, comparison, "PNGs, grid.png", path, warned)


def write_report(path: Path, report: dict) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2, default=str,
                                                                     ensure_ascii=False)))


def write_samples(result: Generation, out: Path, formats: Sequence[str], fps: int) -> str:
    """Per-sample files and a grid; returns a short description of what was written."""
    captions = _captions(result)
    if not result.is_video:
        if result.prompts is not None:  # text-to-image: <seed>-<prompt>.png
            _write_t2i(result, out)
        else:
            save_samples(result.images, result.seeds, result.labels, out)
            save_grid(result.images, captions, out / "grid.png")
        return "PNGs, grid.png"
    tags = result.prompts or result.labels or [""] * len(result.seeds)
    names = [f"{s:06d}-{_slug(str(tag))}".rstrip("-") for s, tag in zip(result.seeds, tags)]
    save_videos(result.images, names, out, formats=formats, fps=fps)
    for fmt in formats:
        save_video_grid(result.images, captions, out / f"grid.{fmt}", fps=fps)
    return f"{', '.join(formats)} per video, " + ", ".join(f"grid.{fmt}" for fmt in formats)


def _write_t2i(result: Generation, out: Path) -> None:
    for image, seed, prompt in zip(result.images, result.seeds, result.prompts):
        save_image(image, out / f"{seed:06d}-{_slug(prompt) or 'prompt'}.png")
    save_grid(result.images, _captions(result), out / "grid.png")


def _captions(result: Generation) -> list[str]:
    if result.prompts is not None:
        return [f"{s}: {p}" for s, p in zip(result.seeds, result.prompts)]
    if result.labels is not None:
        return [f"{s}: {y}" for s, y in zip(result.seeds, result.labels)]
    return [str(s) for s in result.seeds]


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit]
