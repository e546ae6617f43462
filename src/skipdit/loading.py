"""A model ready to sample: the network, its decoder and its text encoder, from how a user names them.

    request = ModelRequest(model="digits/Skip-DiT")                        # a built-in model
    request = ModelRequest(ckpt="DiT-XL-2-skip.pt", vae="sd-vae-ft-ema/")  # an official checkpoint
    loaded = load_for_sampling(request, device="cuda")
    condition = loaded.condition(seeds=8)                                   # labels 0..7, or the default prompt

This is what ``skipdit sample``, ``sample-many``, ``cache tune`` and ``cache calibrate-teacache`` load; the
task is the model's (:attr:`skipdit.protocol.DiffusionModel.task`), never guessed from the flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .assets import BUILTIN_MODELS, TASK_DEFAULTS
from .convert import load
from .convert.checkpoint import stored_text_encoder
from .errors import UserError
from .models import build_model
from .models.random import randomize_
from .protocol import TASKS
from .provenance import identity
from .sampling import Condition, cycle
from .vae import load_vae

VAE_DOWNSAMPLE = 8  # the SD VAE: image side / latent side
TEXT_TASKS = ("t2v", "t2i")
DEFAULT_PROMPTS = {"t2v": "the digit 7 moves up", "t2i": "a handwritten four"}  # for the built-in text models


@dataclass(frozen=True)
class ModelRequest:
    """How a model is named. ``model`` is a built-in name or a checkpoint path, unless ``ckpt`` or
    ``random_weights`` is given, where it is the architecture preset to load into (the official scripts'
    ``--model``). ``task`` picks the built-in model of a task when nothing else is named, and is checked
    against the model otherwise. ``skip_init`` loads a vanilla checkpoint into a ``-skip`` preset.
    ``image_size`` is the output side in pixels. ``text_encoder`` defaults to the one the model was trained
    with."""

    task: str | None = None
    model: str | None = None
    ckpt: str | None = None
    random_weights: bool = False
    skip_init: str | None = None
    vae: str | None = None
    text_encoder: str | None = None
    image_size: int | None = None

    def __post_init__(self):
        if self.task is not None and self.task not in TASKS:
            raise UserError(f"unknown task {self.task!r}; valid: {', '.join(TASKS)}")
        if self.ckpt and self.random_weights:
            raise UserError("random weights and a checkpoint exclude each other")

    def source(self) -> tuple[str | None, str | None]:
        """(checkpoint, architecture preset)."""
        model = self.model
        if model and not self.ckpt and not self.random_weights and (model in BUILTIN_MODELS or Path(model).exists()):
            return model, None
        return self.ckpt, model

    def checkpoint(self) -> str | None:
        """The file (or built-in name) the weights come from; ``None`` for random weights."""
        ckpt, _ = self.source()
        if ckpt is None and not self.random_weights:
            return TASK_DEFAULTS[self.task or "c2i"]
        return ckpt

    def identity(self) -> str:
        """The model as a settings record names it: a file's sha256, a built-in name, or the preset of
        random weights."""
        ckpt, preset = self.source()
        if self.random_weights:
            return f"random weights ({preset})"
        return identity(self.checkpoint()) if ckpt is not None else self.checkpoint()


@dataclass
class Loaded:
    """A model ready to sample: the network, the VAE that decodes its latents (or ``None`` for pixel
    models), the text encoder of a text model, and its task."""

    model: object
    vae: object | None
    text_encoder: object | None
    task: str
    request: ModelRequest

    def condition(self, seeds: int, *, labels: list[int] | None = None, prompts: list[str] | None = None,
                  negative_prompt: str = "") -> Condition:
        """The condition of ``seeds`` samples, one label or prompt per sample: the ``labels`` cycled over them
        (default: sample k gets class k mod classes), or the ``prompts`` (default: the built-in model's) with the
        text encoder."""
        check_task_options(self.task, labels="labels" if labels is not None else None,
                           prompts="prompts" if prompts or negative_prompt else None)
        if self.task in TEXT_TASKS:
            return Condition(prompts=cycle(list(prompts or [DEFAULT_PROMPTS[self.task]]), seeds),
                             negative_prompt=negative_prompt, text_encoder=self.text_encoder)
        if not self.model.num_classes:
            if labels is not None:
                raise UserError("this model is unconditional: it takes no class labels")
            return Condition()
        return Condition(labels=cycle(labels or list(range(self.model.num_classes)), seeds))


def check_task_options(task: str, *, labels: str | None = None, prompts: str | None = None,
                       num_frames: str | None = None) -> None:
    """Options that the model's task does not take are errors, not silently ignored. Each argument is the name
    under which the option was given (the library's argument, or the CLI's flag), or ``None`` if it was not."""
    if task not in TEXT_TASKS and prompts:
        raise UserError(f"{prompts} {_are(prompts)} for text models; this is a {task} model")
    if task in TEXT_TASKS and labels:
        raise UserError(f"{labels} {_are(labels)} for class-conditional models; this is a {task} model (use prompts)")
    if task in ("c2i", "t2i") and num_frames:
        raise UserError(f"{num_frames} {_are(num_frames)} for video models; this is a {task} model")


def _are(name: str) -> str:
    return "are" if " and " in name or not name.startswith("-") else "is"


def load_for_sampling(request: ModelRequest, device: str = "cpu") -> Loaded:
    """The model, the decoder and the text encoder ``request`` names (the VAE and the text encoder on
    ``device``; the model is moved by :func:`skipdit.generate`)."""
    vae = load_vae(request.vae, device) if request.vae else None
    size = request.image_size
    if size is not None:
        scale = VAE_DOWNSAMPLE if vae is not None else 1
        if size % scale:
            raise UserError(f"image size {size} is not divisible by {scale} (the VAE's downsampling)")
    overrides = {} if size is None else {"input_size": size // (VAE_DOWNSAMPLE if vae else 1)}
    ckpt, preset = request.source()
    if ckpt:
        model = load(ckpt, preset, skip_init=request.skip_init, **overrides)
    elif request.random_weights:
        if not preset:
            raise UserError("random weights need an architecture preset, e.g. DiT-S/2-skip")
        if vae is not None:
            raise UserError("random weights build a pixel-space model; drop the VAE")
        model = randomize_(build_model(preset, in_channels=3, **overrides))
    else:
        if preset or request.skip_init:
            raise UserError("an architecture preset and a skip init need a checkpoint (or random weights)")
        model = load(request.checkpoint(), **overrides)
    if request.task and request.task != model.task:
        raise UserError(f"task {request.task} was asked for, but the model is a {model.task} model")
    if vae is None and model.in_channels not in (1, 3):
        raise UserError(f"this model makes {model.in_channels}-channel latents: give a VAE to decode them")
    return Loaded(model, vae, text_encoder_for(model, request, device), model.task, request)


def text_encoder_for(model, request: ModelRequest, device: str = "cpu"):
    """The text encoder of a text model: the one ``request`` names, else the one stored with the checkpoint,
    else the built-in MiniLM; ``None`` for other models."""
    if model.task not in TEXT_TASKS:
        return None
    from .text import load_text_encoder

    stored = stored_text_encoder(request.checkpoint()) if request.checkpoint() else None
    spec = {"name": request.text_encoder} if request.text_encoder else stored or {}
    return load_text_encoder(spec.get("name"), max_length=spec.get("max_length"), device=device)
