"""The training configuration: typed dataclasses with one source of defaults, read from YAML.

    cfg = load_config("configs/digits/skip-dit.yaml", ["lr=3e-4", "data.path=/data/digits"])

Every key is checked: an unknown key fails with the valid ones, a value of the wrong type fails with
the key's name. The resolved config is saved in the run folder and in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..diffusion.gaussian import parse_loss_weighting
from ..errors import UserError

STAGES = ("full", "skip-only")
PRECISIONS = ("fp32", "bf16")
DATA_KINDS = ("digits", "captioned-digits", "moving-digits", "image-folder", "latents")


@dataclass(frozen=True)
class DataConfig:
    """``digits``: the built-in 16x16 digits (needs scikit-learn); ``captioned-digits``: the same as one-frame
    videos with captions, for text-to-image. ``moving-digits``: the built-in videos
    of digits moving on a ``canvas`` (class = digit, captions name digit and motion). ``image-folder``: one
    sub-folder per class, ADM centre crop to ``image_size``. ``latents``: shards written by
    ``skipdit extract-latents``."""

    kind: str = "latents"
    path: str | None = None
    image_size: int | None = None
    flip: bool = True  # random horizontal flip (image-folder, latents); digits use small shifts instead
    workers: int = 0  # DataLoader worker processes
    num_frames: int = 8  # moving-digits: frames per video
    canvas: int = 16  # moving-digits: frame side in pixels
    per_class: int | None = None  # moving-digits: only the first that many digits of each class (None: all)
    copies: int = 2  # moving-digits: videos per digit and motion, each with its own offset and phrasing
    # Joint image-video training (official train_with_img.py): append this many frames of other videos
    # to each video as independent images; they bypass the temporal blocks.
    image_frames: int = 0

    def __post_init__(self):
        _check_choice("data.kind", self.kind, DATA_KINDS)
        _check_min("data.num_frames", self.num_frames, 1)
        _check_min("data.image_frames", self.image_frames, 0)
        _check_min("data.copies", self.copies, 1)
        if self.per_class is not None:
            _check_min("data.per_class", self.per_class, 1)
        if self.image_frames and self.kind != "moving-digits":
            raise UserError("data.image_frames applies to video data (data.kind=moving-digits)")
        if self.kind not in ("digits", "captioned-digits", "moving-digits") and not self.path:
            raise UserError(f"data.path is required for data.kind={self.kind}")
        if self.kind == "image-folder" and not self.image_size:
            raise UserError("data.image_size is required for data.kind=image-folder")
        _check_min("data.workers", self.workers, 0)


@dataclass(frozen=True)
class TrainConfig:
    run_dir: str = "runs/skipdit"
    # -- model: a preset plus config overrides (input_size, in_channels, num_classes, skip_init, ...)
    model: str = "DiT-XL/2-skip"
    model_args: dict = field(default_factory=dict)
    init: str | None = None  # start from these weights; a vanilla model gets new long skips (model_args.skip_init)
    stage: str = "full"  # "skip-only": only the long-skip modules train (stage 1 of the conversion)
    data: DataConfig = field(default_factory=DataConfig)
    # -- text models: the caption encoder ("minilm" built in, or a local T5 / CLIP folder)
    text_encoder: str = "minilm"
    text_max_length: int | None = None  # tokens per caption (default: the encoder's)
    # -- optimisation
    steps: int = 400_000
    global_batch: int = 256
    micro_batch: int | None = None  # per-process batch per forward; smaller than its share = accumulation
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None  # max gradient norm; None = no clipping
    ema_decay: float = 0.9999
    noise_schedule: str = "linear"
    loss_weighting: str = "uniform"  # or "min-snr-5", "x0-clip-20" (diffusion.gaussian.parse_loss_weighting)
    precision: str = "fp32"  # "bf16": autocast; weights, optimizer and EMA stay fp32
    grad_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"  # "auto": cuda:LOCAL_RANK when CUDA is available, else cpu
    # -- bookkeeping
    log_every: int = 100
    ckpt_every: int = 5000
    keep_last: int = 2  # rolling checkpoints kept; older ones go once a newer one is safely on disk
    snapshot_every: int = 0  # also keep every checkpoint at a multiple of this (0: none), for curves

    def __post_init__(self):
        _check_choice("stage", self.stage, STAGES)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in ("steps", "global_batch", "log_every", "ckpt_every", "keep_last"):
            _check_min(name, getattr(self, name), 1)
        _check_min("warmup_steps", self.warmup_steps, 0)
        _check_min("snapshot_every", self.snapshot_every, 0)
        if self.micro_batch is not None:
            _check_min("micro_batch", self.micro_batch, 1)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr must be a number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise UserError(f"adam_betas must both be in [0, 1), got {list(self.adam_betas)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise UserError(f"grad_clip must be a number > 0 or null, got {self.grad_clip}")
        parse_loss_weighting(self.loss_weighting)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


def _check_choice(name: str, value, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UserError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


def _check_min(name: str, value: int, low: int) -> None:
    if value < low:
        raise UserError(f"{name} must be >= {low}, got {value}")


# -- reading ------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike | None = None, sets: list[str] = ()) -> TrainConfig:
    """A config from a YAML file (or the defaults), with ``key=value`` overrides (dotted for ``data``)."""
    raw: dict = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set takes key=value, got {item!r}")
        _set_dotted(raw, key.strip(), _parse_value(key.strip(), text) if text.strip() else None)
    return from_dict(raw)


def _parse_value(key: str, text: str):
    yaml = _yaml()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"--set {key}: {text!r} is not a valid YAML value ({_yaml_problem(err)})") from None


def _yaml_problem(err) -> str:
    """PyYAML's several-line message as one phrase: what is wrong and where."""
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    return f"{context + ': ' if context else ''}{problem}{where}"


def from_dict(raw: dict, cls=TrainConfig, prefix: str = ""):
    """Build ``cls`` from plain data, checking every key and converting every value to its field type."""
    if not isinstance(raw, dict):
        raise UserError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted((str(k) for k in set(raw) - set(names)), key=str)
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                         f"valid: {', '.join(prefix + n for n in names)}")
    values = {k: _coerce(prefix + k, v, hints[k]) for k, v in raw.items()}
    return cls(**values)


def _coerce(name: str, value, kind):
    """``value`` as type ``kind``; YAML gives ``1e-4`` as a string and ``3`` for a float, so be lenient
    where it is safe and strict elsewhere."""
    if dataclasses.is_dataclass(kind):
        return from_dict(value or {}, kind, prefix=name + ".")
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, kind)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
        if kind is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if typing.get_origin(kind) is tuple:
            if not isinstance(value, (list, tuple)) or len(value) != len(args):
                raise TypeError
            return tuple(_coerce(name, v, a) for v, a in zip(value, args))
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        raise UserError(f"config key {name}: expected {_type_name(kind)}, got {_short(value)}") from None
    raise TypeError(f"unsupported config type {kind} for {name}")  # a bug in this module, not user input


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(kind) -> str:
    return getattr(kind, "__name__", None) or str(kind)


def _set_dotted(raw: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        if node.get(part) is None:  # absent, or an empty section in the YAML file (``data:``)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {part} is not a section")
    node[last] = value


def _yaml():
    try:
        import yaml
    except ImportError as err:
        raise UserError("training configs need PyYAML: pip install pyyaml") from err
    return yaml


def _read_yaml(path: Path) -> dict:
    """A config file's mapping. Everything else (missing, empty, not UTF-8 text, invalid YAML, a list or a
    scalar at the top) is a UserError of one line."""
    if path.is_dir():
        raise UserError(f"config {path} is a folder, not a YAML file")
    if not path.is_file():
        raise UserError(f"config not found: {path}")
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"config {path} is empty" + (" (0 bytes)" if not data else ""))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"config {path} is not a UTF-8 text file (byte {err.start} is {data[err.start]:#04x}); "
                        "a YAML config is expected") from None
    yaml = _yaml()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"config {path} is not valid YAML ({_yaml_problem(err)})") from None
    if raw is None:
        raise UserError(f"config {path} holds no keys (only comments)")
    if not isinstance(raw, dict):
        raise UserError(f"config {path} must be a mapping of keys (key: value) at the top level, "
                        f"got a {type(raw).__name__}")
    return raw


def dump_config(config: TrainConfig) -> str:
    data = config.to_dict()
    data["adam_betas"] = list(data["adam_betas"])
    return _yaml().safe_dump(data, sort_keys=False)
