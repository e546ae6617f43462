"""Many samples for FID / FVD, over one or many processes (``torchrun``), resumable, packed as ADM ``.npz``.

    torchrun --nproc-per-node 8 -m skipdit sample-many --ckpt DiT-XL-2-skip.pt --vae sd-vae-ft-ema/ \\
        --seeds 0-49999 --cfg-scale 1.5 --cache c2i:N=2 --out samples/dit-skip-c2i-n2

The seeds are cut into fixed batches of ``batch_size``; process ``r`` of ``W`` takes batches ``r, r+W, ...``.
Every batch therefore holds the same seeds whatever the number of processes, so the images are byte-identical
to a one-process run (batched kernels need not be bit-equal across batch sizes; equal batches are).

Each sample is written atomically as ``samples/<seed>-<label>.png`` (``<seed>.png`` for text models; ``.npy``
frames for video), so a killed run resumes where it stopped: batches whose files all exist are skipped.
Each finished batch appends its time and cache statistics to ``log-rank<r>.jsonl``. At the end rank 0 packs
every sample, in seed order, into ``samples.npz`` (``arr_0`` uint8 NHWC, or N F H W C for video; ``arr_1``
the labels of class models), the format of the ADM evaluation suite, and writes ``summary.json``.

Before the first sample, ``settings.json`` records a fingerprint of everything that determines the samples (the
model's identity, sampler, steps, guidance, cache, precision, batch size, sample shape, each seed's label or
prompt; :func:`run_settings`). A rerun into the same folder resumes only when it agrees; otherwise it is refused
with the differing settings named, and ``overwrite=True`` removes what sample-many wrote there and starts over.
Seeds may be added on a rerun (the record grows), but a seed may not change its label or prompt.

TeaCache, First-Block-Cache and adaptive Skip-Cache decide once per batch from a batch-mean indicator, so with
them a sample depends on the other seeds of its batch (``policy.decides_at_run_time``): the batch size is part of the
fingerprint, and ``summary.json`` says so. Static schedules (Skip-Cache, FORA, ...) are per-sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import CacheStats, parse_cache
from .distributed import barrier, init_distributed, resolve_device, shutdown
from .errors import UserError
from .io import atomic_write, is_temporary, read_image, save_image
from .provenance import differences, fingerprint, provenance
from .sampling import Condition, Runtime, Sampling, generate

SAMPLES_DIR = "samples"
NPZ_FILE = "samples.npz"
SUMMARY_FILE = "summary.json"
SETTINGS_FILE = "settings.json"
SAMPLE_NAME = re.compile(r"\d{6,}(-\d+)?\.(png|npy)")  # what sample_path names: the files --overwrite removes
# Policies whose skip decision is one batch-mean scalar per step (TeaCache's and First-Block-Cache's relative L1,
# adaptive Skip-Cache's shallow-feature drift): a sample's output depends on its batch mates. Deciding per sample
# would mean running the unit stack on a subset of the batch rows each step, which these policies do not do.
DEFAULT_BATCH = 16  # seeds per batch when the runtime sets none: batches must stay fixed across reruns
# the settings that change the samples, as the fingerprint names them (these names are stable, so a folder made
# by an earlier skipdit still resumes); batch_size is added (batched kernels, batch-wise caches)
SAMPLE_SETTINGS = ("sampler", "steps", "respacing", "eta", "cfg_scale", "cfg_mode", "cfg_batched", "precision",
                    "compile", "num_frames", "negative_prompt")


def settings_record(model, sampling: Sampling, runtime: Runtime, condition: Condition) -> dict:
    """The :data:`SAMPLE_SETTINGS` of a run, resolved on ``model`` (the default steps and guidance filled in),
    plus the step list of a solver (``spacing``) and the configuration of a scheduler object: keys that only
    runs with those samplers have, so a folder of a ddpm or ddim run keeps its fingerprint."""
    record = {"sampler": sampling.sampler_name, "steps": sampling.num_steps, "respacing": sampling.respacing,
              "eta": sampling.eta, "cfg_scale": sampling.guidance_for(model), "cfg_mode": sampling.guidance_mode,
              "cfg_batched": sampling.batched_guidance, "precision": runtime.precision, "compile": runtime.compile,
              "num_frames": sampling.num_frames,
              "negative_prompt": condition.negative_prompt if model.conditioning == "text" else None}
    if sampling.spacing_used is not None:
        record["spacing"] = sampling.spacing_used
    if not isinstance(sampling.sampler, str):
        record["scheduler_config"] = {k: v for k, v in sampling.sampler.config.items() if not k.startswith("_")}
    return record


def sample_path(out: Path, seed: int, label: int | None, video: bool) -> Path:
    name = f"{seed:06d}" if label is None else f"{seed:06d}-{label}"
    return out / SAMPLES_DIR / (name + (".npy" if video else ".png"))


def batch_note(cache) -> str | None:
    """One line saying that ``cache`` makes samples depend on their batch mates, or None for per-sample ones."""
    policy = parse_cache(cache)
    if policy is None or not policy.decides_at_run_time:
        return None
    return (f"cache {policy.spec()} decides per batch (a batch-mean indicator), so each sample depends on the "
            "other seeds of its batch: compare or resume runs only at the same --batch-size")


def module_digest(module: torch.nn.Module) -> str:
    """``sha256:<hex>`` of a module's state (names, dtypes, shapes, bytes): the identity of a model that was
    not given by file (random weights, a model built in Python)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def run_settings(model, seeds: Sequence[int], condition: Condition, *, sampling: Sampling, runtime: Runtime,
                 cache=None, vae=None, sources: Mapping | None = None) -> dict:
    """The fingerprint of a sample-many run: ``sources`` (how the caller names the model, VAE, text encoder:
    :func:`skipdit.provenance.identity` of the files, plus anything else that shaped the model), else digests of
    the modules; the sampling settings; the cache; the batch size; the sample shape; each seed's condition."""
    sources = dict(sources or {})
    if "model" not in sources:
        sources["model"] = module_digest(model)
    encoder = condition.text_encoder
    if "vae" not in sources:
        sources["vae"] = None if vae is None else module_digest(getattr(vae, "vae", vae))  # VAEDecoder or a module
    if "text_encoder" not in sources:
        sources["text_encoder"] = None if encoder is None else getattr(encoder, "name", type(encoder).__name__)
    policy = parse_cache(cache)
    record = {**sources, **settings_record(model, sampling, runtime, condition),
              "cache": None if policy is None else policy.spec(), "batch_size": runtime.batch_size or DEFAULT_BATCH,
              "sample_shape": list(model.sample_shape(sampling.num_frames))}
    labels, prompts = _per_seed(condition.labels, len(seeds)), _per_seed(condition.prompts, len(seeds))
    if labels is not None:
        record["labels"] = {str(s): int(y) for s, y in zip(seeds, labels)}
    if prompts is not None:
        record["prompts"] = {str(s): str(p) for s, p in zip(seeds, prompts)}
    return fingerprint(record)


def _per_seed(values, n: int) -> list | None:
    """Labels or prompts given one per seed (sample-many names its files by them), or None."""
    if values is None:
        return None
    if isinstance(values, (int, str)) or len(values) != n:
        count = 1 if isinstance(values, (int, str)) else len(values)
        raise UserError(f"sample-many takes one label or prompt per seed: {count} for {n} seeds")
    return list(values)


def sample_many(
    model, seeds: Sequence[int], out_dir: str | os.PathLike, condition: Condition | None = None, *,
    sampling: Sampling = Sampling(), runtime: Runtime = Runtime(), cache=None, vae=None, pack: bool = True,
    progress: bool = True, overwrite: bool = False, sources: Mapping | None = None,
) -> Path:
    """Sample every seed into ``out_dir`` (``condition``: labels or prompts given per seed); returns the ``.npz``
    path (or the samples folder with ``pack=False``). ``runtime.device`` defaults to this process's GPU, else the
    CPU, and ``runtime.batch_size`` to :data:`DEFAULT_BATCH`; ``progress`` shows a bar over the seeds (the
    runtime's per-step bar stays off). ``sources`` name the model files (:func:`run_settings`). A folder holding
    samples made with other settings is refused unless ``overwrite``, which first removes what sample-many wrote
    there."""
    condition = condition or Condition()
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise UserError("seeds must be unique: each names one sample file")
    labels, prompts = _per_seed(condition.labels, len(seeds)), _per_seed(condition.prompts, len(seeds))
    batch_size = runtime.batch_size or DEFAULT_BATCH
    record = run_settings(model, seeds, condition, sampling=sampling, runtime=runtime, cache=cache, vae=vae,
                          sources=sources)  # before any file is touched: it also checks the cache spec and frames
    out = Path(out_dir)
    if not overwrite:
        record = _merged_settings(out, record)  # every rank refuses alike, before anything is written
    rank, world, local_rank = init_distributed()
    try:
        if rank == 0:
            if overwrite:
                _clear(out)
            (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
            _remove_temporary(out)  # a killed run's; no other rank writes yet (the barrier below)
            atomic_write(out / SETTINGS_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        barrier(world)
        device = resolve_device(runtime.device or "auto", local_rank)
        model = model.to(device)
        batch_runtime = runtime.replace(device=device, batch_size=None, progress=False)
        video = len(model.sample_shape(sampling.num_frames)) == 4
        paths = [sample_path(out, s, None if labels is None else int(labels[k]), video) for k, s in enumerate(seeds)]
        batches = [range(lo, min(lo + batch_size, len(seeds))) for lo in range(0, len(seeds), batch_size)]
        mine = [b for j, b in enumerate(batches) if j % world == rank]
        todo = [b for b in mine if not all(paths[k].is_file() for k in b)]
        bar = tqdm(total=sum(len(b) for b in mine), initial=sum(len(b) for b in mine) - sum(len(b) for b in todo),
                   desc=f"sampling (rank {rank})", disable=not progress, dynamic_ncols=True)
        for batch in todo:
            part = dataclasses.replace(
                condition, labels=None if labels is None else [int(labels[k]) for k in batch],
                prompts=None if prompts is None else [prompts[k] for k in batch])
            result = generate(model, [seeds[k] for k in batch], part, sampling=sampling, runtime=batch_runtime,
                              cache=cache, vae=vae)
            for k, sample in zip(batch, result.images):
                _write(paths[k], sample)
            _log(out / f"log-rank{rank}.jsonl", [seeds[k] for k in batch], result)
            bar.update(len(batch))
        bar.close()
        barrier(world)
        if rank == 0:
            _summarise(out, world, len(seeds), record, device)
            if pack:
                return pack_npz(paths, out / NPZ_FILE, labels)
        return out / NPZ_FILE if pack else out / SAMPLES_DIR
    finally:
        shutdown(world)


def _merged_settings(out: Path, record: dict) -> dict:
    """``record`` with the seeds ``out`` already records added; UserError if ``out`` holds samples made with
    other settings, or samples without a settings record (an older skipdit's, or a foreign folder)."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        if (out / SAMPLES_DIR).is_dir() and any(SAMPLE_NAME.fullmatch(p.name) for p in (out / SAMPLES_DIR).iterdir()):
            raise UserError(f"--out {out} holds samples but no {SETTINGS_FILE} saying how they were made; "
                            "use --overwrite or another --out")
        return record
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is damaged (not JSON); use --overwrite or another --out") from None
    if not isinstance(old, dict):
        raise UserError(f"{path} is not a sample-many settings record; use --overwrite or another --out")
    per_seed = ("labels", "prompts")
    diff = differences({k: v for k, v in old.items() if k not in per_seed},
                       {k: v for k, v in record.items() if k not in per_seed})
    merged = dict(record)
    for key in per_seed:
        before, now = old.get(key), record.get(key)
        if (before is None) != (now is None):
            diff.append(f"{key} {'none' if before is None else 'given'} -> {'none' if now is None else 'given'}")
            continue
        if before is None:
            continue
        changed = [s for s in now if s in before and before[s] != now[s]]
        if changed:
            s = changed[0]
            more = f" (and {len(changed) - 1} more seeds)" if len(changed) > 1 else ""
            diff.append(f"{key[:-1]} of seed {s} {json.dumps(before[s])} -> {json.dumps(now[s])}{more}")
        merged[key] = {**before, **now}
    if diff:
        raise UserError(f"--out {out} holds samples made with other settings: {', '.join(diff)}; "
                        "use --overwrite or another --out")
    return merged


def _clear(out: Path) -> None:
    """Remove what sample-many writes in ``out`` (samples, their temporary files, logs, the .npz, the summary and
    the settings record) and nothing else."""
    folder = out / SAMPLES_DIR
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and (SAMPLE_NAME.fullmatch(p.name) or is_temporary(p)):
                p.unlink()
    for p in [*out.glob("log-rank*.jsonl"), out / NPZ_FILE, out / SUMMARY_FILE, out / SETTINGS_FILE]:
        p.unlink(missing_ok=True)


def _remove_temporary(out: Path) -> None:
    for folder in (out, out / SAMPLES_DIR):
        for p in folder.iterdir():
            if p.is_file() and is_temporary(p):
                p.unlink()


def pack_npz(paths: Sequence[Path], npz: Path, labels: Sequence[int] | None = None) -> Path:
    """The ADM reference-batch format: ``arr_0`` uint8 samples in the given order, ``arr_1`` labels."""
    first = _read(paths[0])
    arr = np.empty((len(paths), *first.shape), dtype=np.uint8)
    for k, path in enumerate(paths):
        arr[k] = _read(path)
    arrays = {"arr_0": arr}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    return atomic_write(npz, lambda tmp: np.savez(tmp, **arrays))


def _read(path: Path) -> np.ndarray:
    return np.load(path) if path.suffix == ".npy" else read_image(path)  # HWC, also for one channel


def _write(path: Path, sample: torch.Tensor) -> None:
    """A video's frames as ``.npy`` (lossless, for packing), an image as PNG; atomically either way."""
    if path.suffix == ".npy":
        atomic_write(path, lambda tmp: np.save(tmp, sample.numpy()))
    else:
        atomic_write(path, lambda tmp: save_image(sample, tmp))


def _log(path: Path, seeds: list[int], result) -> None:
    record = {"seeds": [seeds[0], seeds[-1]], "count": len(seeds), "seconds": result.seconds,
              "cache": result.cache, "stats": result.stats.__dict__, "time": time.time()}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _summarise(out: Path, world: int, samples: int, record: dict, device) -> None:
    """Totals over every rank's log, earlier (resumed) runs included: time and what the cache did; the settings
    (without the per-seed conditions, which stay in settings.json) and the versions and device."""
    records = [json.loads(line) for log in sorted(out.glob("log-rank*.jsonl")) for line in log.read_text().splitlines()
               if line.strip()]
    stats = None
    for r in records:
        s = r["stats"]
        s = CacheStats(**{**s, "cached_units": tuple(s.get("cached_units", ()))})
        stats = s if stats is None else stats + s
    summary = {
        "samples": samples, "processes": world, "batches_run": len(records),
        "seconds_total": sum(r["seconds"] for r in records), "cache": records[0]["cache"] if records else None,
        "stats": None if stats is None else {**stats.__dict__, "ideal_speedup": stats.ideal_speedup},
        "batch_dependent": batch_note(record["cache"]) is not None, "note": batch_note(record["cache"]),
        "settings": {k: v for k, v in record.items() if k not in ("labels", "prompts")},
        "provenance": provenance(device),
    }
    atomic_write(out / SUMMARY_FILE, lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
