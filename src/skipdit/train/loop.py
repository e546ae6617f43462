"""The training loop: one linear function that resumes by default.

    skipdit train --config configs/digits/skip-dit.yaml          # again after a kill: it continues

Single process, or one process per device under ``torchrun`` (DDP; gloo on CPU, NCCL on CUDA; the
same command on every node for multi-node). Every random number of a step (sample order, timesteps,
noise, label drops, augmentation) is drawn for the global batch from a generator seeded by
``(seed, step)``, and each process takes its slice. A step therefore computes the same gradient with 1
or 8 processes, and the random state at any step is a function of the step alone: resuming restores the
weights, optimizer, EMA and step, and the random state follows from the step.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from ..convert.checkpoint import check_architecture, load_state_into, read_weights
from ..diffusion import GaussianDiffusion
from ..distributed import init_distributed, resolve_device, shutdown
from ..errors import UserError
from ..models import arch_of, config_from_dict, model_from_config, preset_config
from .checkpoint import checkpoint_path, latest_checkpoint, prune_checkpoints, save_checkpoint
from .config import TrainConfig, dump_config
from .data import StepBatches, TrainData, build_data, mix_seed
from .ema import make_ema, update_ema_
from .recipe import apply_stage

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
NUM_TIMESTEPS = 1000


def train(config: TrainConfig, *, progress: bool = True) -> Path:
    """Train (or continue training) the run in ``config.run_dir``. Returns the last checkpoint's path."""
    rank, world, local_rank = init_distributed()
    try:
        with _terminate_as_interrupt(enabled=world == 1):
            return _train(config, rank, world, local_rank, progress)
    finally:
        shutdown(world)


def _train(config: TrainConfig, rank: int, world: int, local_rank: int, progress: bool) -> Path:
    device = resolve_device(config.device, local_rank)
    run_dir = Path(config.run_dir)
    data = build_data(config.data)  # fails on a missing or empty dataset before anything is written
    encoder = _text_encoder(config)
    model_config = resolve_model_config(config, data, encoder.dim if encoder is not None else None)
    share = _check_batching(config, world)
    micro = config.micro_batch or share
    if config.stage == "skip-only" and not config.init:
        # adaLN-Zero blocks and head start at zero, so no gradient would reach the skips of a fresh model
        raise UserError("stage skip-only trains the long skips of pretrained weights: set init (--init PATH)")
    resumed = latest_checkpoint(run_dir)
    if resumed is not None:
        _check_same_run(resumed[0], model_config, config, resumed[1])

    torch.manual_seed(config.seed)  # identical initial weights on every process
    model = model_from_config(model_config)
    if config.init and resumed is None:
        _load_init(model, config.init)
    model.to(device)
    model.gradient_checkpointing = config.grad_checkpointing
    params = apply_stage(model, config.stage)
    ema = make_ema(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay)
    start = 0
    if resumed is not None:
        payload, path = resumed
        model.load_state_dict(payload["model"])
        ema.load_state_dict(payload["ema"])
        optimizer.load_state_dict(payload["opt"])
        start = int(payload["step"])
        if rank == 0:
            log.warning("resuming %s from step %d (%s)", run_dir, start, path.name)
    torch.manual_seed(mix_seed(config.seed, rank, salt=2))  # a fixed seed per process for anything else

    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(dump_config(config))
        _truncate_log(run_dir / LOG_FILE, start)
    net = model
    if world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    diffusion = GaussianDiffusion.create(None, schedule=config.noise_schedule, num_timesteps=NUM_TIMESTEPS,
                                         learn_sigma=model_config.learn_sigma)
    batches = StepBatches(len(data.dataset), config.global_batch, start, config.steps, config.seed, rank, world)
    loader = torch.utils.data.DataLoader(data.dataset, batch_sampler=batches, num_workers=config.data.workers,
                                         pin_memory=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    condition = _Conditioner(model_config, data, encoder, device)
    image_frames = config.data.image_frames
    input_shape = _input_shape(data.sample_shape, image_frames)
    mine = slice(rank * share, (rank + 1) * share)
    bar = _progress_bar(config.steps, start, progress and rank == 0)
    meter = _Meter()
    step, saved = start, start
    model.train()
    try:
        for items, labels in loader:
            # -- the global batch's random numbers, then this process's slice ----------------------------
            gen = torch.Generator().manual_seed(mix_seed(config.seed, step))
            uniforms = torch.rand(config.global_batch, 4, generator=gen)  # 0-2: augmentation, 3: label drop
            indices = torch.randint(0, NUM_TIMESTEPS, (config.global_batch,), generator=gen)
            noise = torch.randn(config.global_batch, *input_shape, generator=gen)
            normals = torch.randn(config.global_batch, *data.sample_shape, generator=gen) if data.uses_normals \
                else None
            x0 = data.augment(items, uniforms[mine, :3], None if normals is None else normals[mine])
            drop = (uniforms[mine, 3] < condition.drop_prob).to(device)
            image_targets = None
            if image_frames:  # frames of other videos, appended as independent images (train_with_img.py)
                images, image_targets = _image_frames(data, gen, config.global_batch, image_frames, mine)
                x0 = torch.cat([x0, images], dim=2)
                image_targets = image_targets.to(device)
            x0, labels = x0.to(device), labels.to(device)
            indices, noise = indices[mine].to(device), noise[mine].to(device)

            # -- forward / backward over micro-batches, one optimizer step -------------------------------
            lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            parts = range(0, share, micro)
            for k, lo in enumerate(parts):
                mb = slice(lo, lo + micro)
                sync = world == 1 or k == len(parts) - 1
                with (contextlib.nullcontext() if sync else net.no_sync()), autocast:
                    model_fn = functools.partial(condition, net, labels[mb], drop[mb],
                                                 None if image_targets is None else image_targets[mb])
                    terms = diffusion.training_losses(model_fn, x0[mb], indices[mb], noise[mb],
                                                       config.loss_weighting)
                    loss = terms["loss"].mean() * (micro / share)
                loss.backward()
                meter.add_losses(terms, micro)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
            optimizer.step()
            update_ema_(ema, model, config.ema_decay)
            step += 1
            meter.add_step(grad_norm)

            # -- bookkeeping ----------------------------------------------------------------------------
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                record = meter.flush(world, device)
                record = {"step": step, **record, "lr": lr}
                if rank == 0:
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                    with open(run_dir / LOG_FILE, "a") as f:
                        f.write(json.dumps(record) + "\n")
            if step % config.ckpt_every == 0 or step == config.steps:
                _save(run_dir, step, model, ema, optimizer, config, model_config, rank, world)
                saved = step
    except KeyboardInterrupt:
        if world == 1 and step > saved:  # keep the finished steps; DDP peers may be mid-collective
            _save(run_dir, step, model, ema, optimizer, config, model_config, rank, world)
            log.warning("interrupted: saved step %d; run the same command to continue", step)
        raise
    finally:
        bar.close()
    return checkpoint_path(run_dir, step)


# -- pieces ------------------------------------------------------------------------------------------------
class _Conditioner:
    """``condition(net, targets, drop, image_targets, x_t, t)``: the network conditioned on a batch's targets
    (class labels, or caption ids whose embeddings are computed once up front), with the dropped ones
    replaced by the null class or the empty caption (for classifier-free guidance)."""

    def __init__(self, model_config, data: TrainData, encoder, device: torch.device):
        self.data, self.text = data, encoder is not None
        self.drop_prob = getattr(model_config, "caption_dropout_prob" if self.text else "class_dropout_prob", 0.0)
        if self.text:
            emb, mask = encoder.encode(data.captions)  # (captions, L, D), (captions, L)
            null_emb, null_mask = encoder.encode([""])
            self.emb, self.mask = emb.to(device), mask.to(device)
            self.null_emb, self.null_mask = null_emb.to(device), null_mask.to(device)

    def __call__(self, net, targets, drop, image_targets, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        extra = {}
        if image_targets is not None:
            extra["num_image_frames"] = image_targets.shape[1]
        if not self.text:
            if image_targets is not None:
                extra["image_labels"] = self.data.labels(image_targets)
            return net(xt, t, self.data.labels(targets), force_drop=drop, **extra)
        emb = torch.where(drop[:, None, None], self.null_emb, self.emb[targets])
        mask = torch.where(drop[:, None], self.null_mask, self.mask[targets])
        if image_targets is not None:
            extra.update(image_text=self.emb[image_targets], image_text_mask=self.mask[image_targets])
        return net(xt, t, emb, mask, **extra)


def _text_encoder(config: TrainConfig):
    if arch_of(preset_config(config.model)) != "latte_t2v":
        return None
    from ..text import load_text_encoder

    return load_text_encoder(config.text_encoder, max_length=config.text_max_length)


def _input_shape(sample_shape: tuple[int, ...], image_frames: int) -> tuple[int, ...]:
    if not image_frames:
        return sample_shape
    c, f, h, w = sample_shape
    return (c, f + image_frames, h, w)


def _image_frames(data: TrainData, gen: torch.Generator, global_batch: int, k: int, mine: slice):
    """``k`` random frames of random videos per sample, drawn for the global batch: (n, C, k, H, W) and
    their targets (n, k)."""
    frames = data.sample_shape[1]
    videos = torch.randint(0, len(data.dataset), (global_batch, k), generator=gen)[mine]
    which = torch.randint(0, frames, (global_batch, k), generator=gen)[mine]
    items = [data.dataset[i] for i in videos.flatten().tolist()]
    pixels = torch.stack([x[:, f] for (x, _), f in zip(items, which.flatten().tolist())])  # (n*k, C, H, W)
    targets = torch.tensor([target for _, target in items]).view(videos.shape)
    return pixels.unflatten(0, videos.shape).transpose(1, 2), targets  # (n, C, k, H, W), (n, k)


def resolve_model_config(config: TrainConfig, data: TrainData, text_dim: int | None = None):
    """The preset with ``model_args``; input size, channels, frames, classes and caption width default to
    the data's (and the text encoder's)."""
    preset = preset_config(config.model)
    arch = arch_of(preset)
    shape = data.sample_shape
    if (len(shape) == 4) != (arch != "dit"):
        kind = "video" if len(shape) == 4 else "image"
        raise UserError(f"data.kind={config.data.kind} gives {kind}s, which model {config.model} does not take")
    height, width = shape[-2:]
    if height != width:
        raise UserError(f"square inputs only, the data gives {height}x{width}")
    fitted = {"input_size": height, "in_channels": shape[0]}
    if arch != "dit":
        fitted["num_frames"] = shape[1]
    if arch == "latte_t2v":
        if data.captions is None:
            raise UserError(f"model {config.model} is text-conditioned; data.kind={config.data.kind} has no captions")
        fitted["caption_channels"] = text_dim
    else:
        fitted["num_classes"] = data.num_classes
    model_config = preset.replace(**{**fitted, **config.model_args})
    clashes = [f"{k}={getattr(model_config, k)} (data: {v})" for k, v in fitted.items()
               if getattr(model_config, k) != v and not (k == "num_frames" and getattr(model_config, k) > v)]
    if clashes:
        raise UserError(f"model_args do not fit the data: {', '.join(clashes)}")
    return model_config


def _check_batching(config: TrainConfig, world: int) -> int:
    """This process's share of the global batch."""
    if config.global_batch % world:
        raise UserError(f"global_batch {config.global_batch} is not divisible by the {world} processes")
    share = config.global_batch // world
    if config.micro_batch and share % config.micro_batch:
        raise UserError(f"micro_batch {config.micro_batch} does not divide the per-process batch {share}")
    return share


def _check_same_run(payload: dict, model_config, config: TrainConfig, path: Path) -> None:
    """Resuming continues the same network; anything else needs a new run folder."""
    arch = payload.get("arch", "dit")
    if arch != arch_of(model_config):
        diffs = [f"architecture: {arch} -> {arch_of(model_config)}"]
    else:
        saved = config_from_dict(arch, payload["model_config"])
        diffs = [f"{k}: {getattr(saved, k)} -> {getattr(model_config, k)}" for k in asdict(saved)
                 if getattr(saved, k) != getattr(model_config, k) and k != "skip_init"]
    for key in ("stage", "text_encoder", "text_max_length"):  # how the network is trained and conditioned
        before = payload["config"].get(key, getattr(config, key))
        if before != getattr(config, key):
            diffs.append(f"{key}: {before} -> {getattr(config, key)}")
    if diffs:
        raise UserError(f"{path.parent.parent} holds a run of another architecture ({'; '.join(diffs)}); "
                         "use a new run_dir (a next stage starts a new run with init: <checkpoint>)")


def _load_init(model, path: str) -> None:
    """Initial weights from a checkpoint of the same family; a vanilla one gets new long skips."""
    # a training checkpoint gives its raw weights: training continues those, not the EMA
    state, fmt, known = read_weights(path, prefer=("model", "ema", "state_dict"), input_size=model.config.input_size)
    if known.pop("arch") != arch_of(model.config):
        raise UserError(f"init {path} is not a {arch_of(model.config)} checkpoint")
    check_architecture(known, model.config, path)
    report = load_state_into(model, state, skip_init=model.config.skip_init, source_format=fmt)
    if report.new:
        log.warning("init from %s: %d long-skip tensors are new (%s init)", path, len(report.new),
                    model.config.skip_init)


def _save(run_dir, step, model, ema, optimizer, config, model_config, rank, world) -> None:
    if rank == 0:
        payload = {
            "model": model.state_dict(), "ema": ema.state_dict(), "opt": optimizer.state_dict(), "step": step,
            "config": config.to_dict(), "model_config": asdict(model_config), "arch": arch_of(model_config),
        }
        save_checkpoint(payload, checkpoint_path(run_dir, step))
        prune_checkpoints(run_dir, config.keep_last, config.snapshot_every)
    if world > 1:
        dist.barrier()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step, so a resumed run's log reads as one uninterrupted run."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in lines))


class _Meter:
    """Loss sums and gradient norms between log lines; losses are averaged over all processes."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.samples = 0
        self.grad_norms: list[torch.Tensor] = []
        self.start = time.perf_counter()

    def add_losses(self, terms: dict[str, torch.Tensor], samples: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float().sum()
        self.samples += samples

    def add_step(self, grad_norm: torch.Tensor) -> None:
        self.grad_norms.append(grad_norm.detach().float())

    def flush(self, world: int, device: torch.device) -> dict:
        names = sorted(self.sums)
        totals = torch.stack([self.sums[k] for k in names] + [torch.tensor(float(self.samples), device=device)])
        if world > 1:
            dist.all_reduce(totals)
        *losses, samples = totals.tolist()
        record = {k: v / samples for k, v in zip(names, losses)}
        record["grad_norm"] = torch.stack(self.grad_norms).mean().item()  # identical on every process
        record["samples_per_sec"] = samples / (time.perf_counter() - self.start)
        self.__init__()
        return record


@contextlib.contextmanager
def _terminate_as_interrupt(enabled: bool):
    """SIGTERM (``kill``, batch schedulers) ends a single-process run like Ctrl-C: finished steps are saved."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", dynamic_ncols=True)
