"""The training loop: one linear function that resumes by default.

    skipdit train --config configs/digits/skip-dit.yaml          # again after a kill: it continues

Single process, or one process per device under ``torchrun`` (DDP; gloo on CPU, NCCL on CUDA; the
same command on every node for multi-node). Every random number of a step (sample order, timesteps,
noise, label drops, augmentation) is drawn for the global batch from a generator seeded by
``(seed, step)``, and each process takes its slice. A step therefore computes the same gradient with 1
or 8 processes, and the random state at any step is a function of the step alone: resuming restores the
weights, optimizer, EMA and step, and the random state follows from the step.

Ctrl-C (SIGINT) and SIGTERM stop a run only at a step boundary: the signal sets a flag, and once the step in
progress is finished (optimizer, EMA, counter, log line, periodic checkpoint) the loop saves it and raises
:class:`TrainingInterrupted`. The checkpoint then holds exactly the steps its name says, and the resumed run
ends bit-identical to an uninterrupted one. Under DDP the processes agree on the flag at every step boundary
(one all-reduce of one number), so they all stop after the same step. In a single process a second Ctrl-C
stops at once, without saving (the newest checkpoint stays the one to resume from).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
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
from ..errors import UserError, is_out_of_memory
from ..models import arch_of, config_from_dict, model_from_config, preset_config
from .checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_path,
    latest_checkpoint,
    prune_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import TrainConfig, dump_config
from .data import StepBatches, TrainData, build_data, mix_seed
from .ema import make_ema, update_ema_
from .recipe import apply_stage

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
NUM_TIMESTEPS = 1000


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT/SIGTERM at a step boundary, after saving that step (``.step``)."""

    def __init__(self, step: int, signal_name: str):
        super().__init__(f"{signal_name}: stopped after step {step}, which is saved")
        self.step, self.signal_name = step, signal_name


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
    input_shape = _input_shape(data.sample_shape, config.data.image_frames)
    _check_host_memory(config, data, input_shape, share)
    _check_run_folder(run_dir)
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
        try:
            model.load_state_dict(payload["model"])
            ema.load_state_dict(payload["ema"])
            optimizer.load_state_dict(payload["opt"])
        except (KeyError, ValueError, RuntimeError) as err:  # only an unverified (older) file can get here
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"{path.name} does not fit the run's model and optimizer ({first})") from None
        start = int(payload["step"])
        if rank == 0:
            log.warning("resuming %s from step %d (%s)", run_dir, start, path.name)
    torch.manual_seed(mix_seed(config.seed, rank, salt=2))  # a fixed seed per process for anything else

    if rank == 0:
        (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)  # an unwritable run_dir fails now, not later
        remove_stale_temporaries(run_dir)
        _write_atomically(run_dir / CONFIG_FILE, dump_config(config))
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
    mine = slice(rank * share, (rank + 1) * share)
    bar = _progress_bar(config.steps, start, progress and rank == 0)
    meter = _Meter()
    step, saved = start, start
    model.train()
    stop = _StopSignals(announce=rank == 0, hard_abort=world == 1)
    try:
        with stop:
            for items, labels in loader:
                try:
                    # -- the global batch's random numbers, then this process's slice --------------------------
                    gen = torch.Generator().manual_seed(mix_seed(config.seed, step))
                    uniforms = torch.rand(config.global_batch, 4, generator=gen)  # 0-2: augmentation, 3: label drop
                    indices = torch.randint(0, NUM_TIMESTEPS, (config.global_batch,), generator=gen)
                    noise = torch.randn(config.global_batch, *input_shape, generator=gen)
                    normals = torch.randn(config.global_batch, *data.sample_shape, generator=gen) \
                        if data.uses_normals else None
                    x0 = data.augment(items, uniforms[mine, :3], None if normals is None else normals[mine])
                    drop = (uniforms[mine, 3] < condition.drop_prob).to(device)
                    image_targets = None
                    if image_frames:  # frames of other videos, appended as independent images (train_with_img.py)
                        images, image_targets = _image_frames(data, gen, config.global_batch, image_frames, mine)
                        x0 = torch.cat([x0, images], dim=2)
                        image_targets = image_targets.to(device)
                    x0, labels = x0.to(device), labels.to(device)
                    indices, noise = indices[mine].to(device), noise[mine].to(device)

                    # -- forward / backward over micro-batches, one optimizer step -----------------------------
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
                except (MemoryError, RuntimeError) as err:
                    if not is_out_of_memory(err):
                        raise
                    kept = f"the newest checkpoint is step {saved}" if saved else "no checkpoint was written"
                    raise UserError(f"out of memory in training step {step + 1} on {device} (global_batch "
                                    f"{config.global_batch}, {share} per process, micro_batch {micro}): set a "
                                    f"smaller micro_batch (gradient accumulation computes the same step); {kept}"
                                    ) from None

                # -- bookkeeping --------------------------------------------------------------------------------
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

                # -- the step boundary: the only place a signal stops the run ------------------------------------
                if stop.agreed(world, device):
                    if step > saved:
                        _save(run_dir, step, model, ema, optimizer, config, model_config, rank, world)
                        saved = step
                    if rank == 0:
                        log.warning("interrupted: saved step %d; run the same command to continue", step)
                    raise TrainingInterrupted(step, stop.requested)
    except KeyboardInterrupt as err:
        if not isinstance(err, TrainingInterrupted) and rank == 0:  # a second Ctrl-C: mid-step, nothing saved
            log.warning("aborted without saving: run the same command to continue from step %d", saved)
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
        path = save_checkpoint(payload, checkpoint_path(run_dir, step))  # written, read back and verified
        prune_checkpoints(run_dir, config.keep_last, config.snapshot_every, verified=path)
    if world > 1:
        dist.barrier()


def _check_run_folder(run_dir: Path) -> None:
    """What is in the way of a run folder fails before any work, not at the first checkpoint."""
    for path, kind in ((run_dir, "folder"), (run_dir / CHECKPOINT_DIR, "folder"), (run_dir / LOG_FILE, "file"),
                       (run_dir / CONFIG_FILE, "file")):
        if path.exists() and (path.is_dir() != (kind == "folder")):
            raise UserError(f"{path} is in the way: the run needs a {kind} there")


def _write_atomically(path: Path, text: str) -> None:
    """A kill while a run folder's text file is rewritten leaves the old one or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step, so a resumed run's log reads as one uninterrupted run. A torn
    last line (a kill mid-write) is dropped with a warning, as are lines that are not log records."""
    if not path.exists():
        return
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    kept, torn, bad = [], False, []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            at = record.get("step", 0) if isinstance(record, dict) else None
            if not isinstance(at, int):
                raise ValueError
        except ValueError:
            if number == len(lines):
                torn = True
            else:
                bad.append(number)
            continue
        if at <= step:
            kept.append(line)
    if torn:
        log.warning("%s: dropped its torn last line (a write cut short)", path)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        log.warning("%s: dropped %d line%s that are not log records (line %s)", path, len(bad),
                    "" if len(bad) == 1 else "s", shown)
    _write_atomically(path, "".join(ln + "\n" for ln in kept))


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _check_host_memory(config: TrainConfig, data: TrainData, input_shape: tuple[int, ...], share: int) -> None:
    """Refuse a batch whose per-step inputs cannot fit in this machine's memory, before any work: every
    process draws the noise and sample order of the whole global batch, and holds its share of the data."""
    total = _host_memory()
    if not total:
        return
    numel_input, numel_sample = math.prod(input_shape), math.prod(data.sample_shape)
    per_global = 64 + 4 * numel_input + (4 * numel_sample if data.uses_normals else 0)  # indices, noise
    need = config.global_batch * per_global + share * 4 * (2 * numel_sample + numel_input)  # + data, x0
    if need > total:
        raise UserError(f"global_batch {config.global_batch} needs about {_bytes(need)} of memory per step for "
                        f"its inputs and noise alone; this machine has {_bytes(total)}. Use a smaller global_batch")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


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
    """Outside the loop's step boundaries (setup, before the first step), SIGTERM (``kill``, batch
    schedulers) ends a single-process run like Ctrl-C: there is nothing to save yet."""
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


class _StopSignals:
    """While active, SIGINT and SIGTERM only ask the loop to stop: :meth:`agreed` is checked at each step
    boundary. With ``hard_abort`` a second SIGINT raises ``KeyboardInterrupt`` at once. Not under DDP:
    torchrun forwards the terminal's Ctrl-C to processes that already had it, and ends them itself (SIGKILL)
    if they take too long."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True, hard_abort: bool = True):
        self.announce, self.hard_abort = announce, hard_abort
        self.requested: str | None = None
        self._previous: dict = {}
        self._pid = os.getpid()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: the main process decides
            return
        if self.requested is not None:
            if self.hard_abort and signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.requested = signal.Signals(signum).name
        if self.announce:
            again = "; Ctrl-C again stops at once, without saving" if self.hard_abort else ""
            log.warning("%s: stopping after this step, which will be saved%s", self.requested, again)

    def agreed(self, world: int, device: torch.device) -> bool:
        """Whether to stop now. Under DDP every process contributes its flag and all get the same answer, so
        they stop after the same step (the loop syncs with the device at every step anyway, when it copies
        the next batch there, so this costs one tiny all-reduce)."""
        if world == 1:
            return self.requested is not None
        flag = torch.tensor([0.0 if self.requested is None else 1.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0 and self.requested is None:
            self.requested = "a signal to another process"
        return flag.item() > 0


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", dynamic_ncols=True)
