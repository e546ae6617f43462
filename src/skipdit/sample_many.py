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
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import CacheStats
from .distributed import barrier, init_distributed, resolve_device, shutdown
from .errors import UserError
from .io import atomic_write, read_image, save_image
from .sampling import generate

SAMPLES_DIR = "samples"
NPZ_FILE = "samples.npz"
SUMMARY_FILE = "summary.json"


def sample_path(out: Path, seed: int, label: int | None, video: bool) -> Path:
    name = f"{seed:06d}" if label is None else f"{seed:06d}-{label}"
    return out / SAMPLES_DIR / (name + (".npy" if video else ".png"))


def sample_many(
    model, seeds: Sequence[int], out_dir: str | os.PathLike, *, labels: Sequence[int] | None = None,
    prompts: Sequence[str] | None = None, batch_size: int = 16, device: str = "auto", pack: bool = True,
    progress: bool = True, **settings,
) -> Path:
    """Sample every seed (labels or prompts given per seed, as :func:`skipdit.generate` takes them) into
    ``out_dir``; returns the ``.npz`` path (or the samples folder with ``pack=False``). ``settings`` go to
    :func:`skipdit.generate` (sampler, steps, cache, cfg_scale, vae, text_encoder, ...)."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise UserError("seeds must be unique: each names one sample file")
    if labels is not None and len(labels) != len(seeds):
        raise UserError(f"{len(labels)} labels for {len(seeds)} seeds")
    if prompts is not None and len(prompts) != len(seeds):
        raise UserError(f"{len(prompts)} prompts for {len(seeds)} seeds")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    rank, world, local_rank = init_distributed()
    try:
        out = Path(out_dir)
        (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        device = resolve_device(device, local_rank)
        model = model.to(device)
        video = len(model.sample_shape(settings.get("num_frames"))) == 4
        paths = [sample_path(out, s, None if labels is None else int(labels[k]), video) for k, s in enumerate(seeds)]
        batches = [range(lo, min(lo + batch_size, len(seeds))) for lo in range(0, len(seeds), batch_size)]
        mine = [b for j, b in enumerate(batches) if j % world == rank]
        todo = [b for b in mine if not all(paths[k].is_file() for k in b)]
        bar = tqdm(total=sum(len(b) for b in mine), initial=sum(len(b) for b in mine) - sum(len(b) for b in todo),
                   desc=f"sampling (rank {rank})", disable=not progress, dynamic_ncols=True)
        for batch in todo:
            result = generate(
                model, [seeds[k] for k in batch], None if labels is None else [int(labels[k]) for k in batch],
                prompts=None if prompts is None else [prompts[k] for k in batch], device=device, **settings,
            )
            for k, sample in zip(batch, result.images):
                _write(paths[k], sample)
            _log(out / f"log-rank{rank}.jsonl", [seeds[k] for k in batch], result)
            bar.update(len(batch))
        bar.close()
        barrier(world)
        if rank == 0:
            _summarise(out, world, len(seeds))
            if pack:
                return pack_npz(paths, out / NPZ_FILE, labels)
        return out / NPZ_FILE if pack else out / SAMPLES_DIR
    finally:
        shutdown(world)


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


def _summarise(out: Path, world: int, samples: int) -> None:
    """Totals over every rank's log, earlier (resumed) runs included: time and what the cache did."""
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
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
