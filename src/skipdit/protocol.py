"""The model protocol: what caches, samplers, guidance, the bench and training need from a model.

Every skipdit model (:class:`~skipdit.models.DiT`, :class:`~skipdit.models.Latte`,
:class:`~skipdit.models.LatteT2V`) implements it, and so does every adapter that wraps a foreign model
(the diffusers peers of the bench). Code that needs one of these members uses it directly: there are no
``getattr`` probes with defaults, so a model that lacks one fails :func:`check_model`, not deep in a run.

A model is a stack of ``num_units`` *units* (DiT blocks, Latte (spatial, temporal) pairs, Latte-T2V
layers; reference §B.1). With long skips, units ``0 .. L/2-1`` push their outputs and unit ``i >= L/2``
first fuses the output of unit ``L-1-i``. Caches act through :meth:`DiffusionModel.run_units`.
skipdit's own models share that loop, and the members that follow from their configs, through
:class:`skipdit.models.skip.LongSkipStack`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn

Conditioning = Literal["class", "text"]
CONDITIONINGS = ("class", "text")
TASKS = ("c2i", "c2v", "t2v", "t2i")  # class-to-image, class-to-video, text-to-video, text-to-image


@runtime_checkable
class DiffusionModel(Protocol):
    """A denoiser ``model(x, t, *cond, cache=None)`` built as a unit stack (see the module docstring)."""

    config: object  # the frozen architecture config, saved with every checkpoint
    task: str  # one of TASKS
    conditioning: Conditioning  # "class": cond is (labels,); "text": cond is (embeddings, mask)
    num_classes: int  # classes of a class model; 0 for an unconditional or a text model
    null_label: int | None  # the label of the unconditional branch (class models with classes), else None
    in_channels: int  # channels of x (latent or pixel)
    learn_sigma: bool  # the output carries as many variance channels as x has (ADM's learned sigma)
    num_frames: int | None  # frames a video model makes by default; None for image models
    num_units: int  # units a cache schedules over
    has_long_skips: bool
    sublayers: tuple[str, ...]  # sublayer names its units pass to a memo ("attn", "cross_attn", "mlp", ...)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *cond, cache=None) -> torch.Tensor:
        """The model output for ``x`` (N, C, [F,] H, W) at timesteps ``t`` (N,) on the 0..999 scale."""
        ...

    def sample_shape(self, num_frames: int | None = None) -> tuple[int, ...]:
        """(C, H, W) of an image, (C, F, H, W) of a video (``num_frames`` defaults to ``num_frames``)."""
        ...

    def run_units(self, h: torch.Tensor, ctx, start: int = 0, stop: int | None = None,
                  skips: list[torch.Tensor] | None = None, memo=None) -> torch.Tensor:
        """Units ``start .. stop-1`` on the hidden state ``h``; ``ctx`` is whatever they need (passed through
        untouched); ``skips`` is the long-skip stack (pushed / popped as the wiring says); ``memo`` sees every
        sublayer call (:func:`skipdit.models.skip.sublayer`)."""
        ...

    def first_block_input(self, h: torch.Tensor, ctx) -> torch.Tensor:
        """The timestep-modulated input of the first attention sublayer (TeaCache's indicator)."""
        ...

    def repeated_blocks(self) -> Iterable[nn.Module]:
        """The blocks that repeat through the stack, which regional compilation compiles one by one."""
        ...

    def parameters(self) -> Iterable[nn.Parameter]: ...


_MEMBERS: dict[str, type | tuple[type, ...]] = {
    "task": str, "conditioning": str, "num_classes": int, "null_label": (int, type(None)), "in_channels": int,
    "learn_sigma": bool, "num_frames": (int, type(None)), "num_units": int, "has_long_skips": bool,
    "sublayers": tuple,
}
_METHODS = ("sample_shape", "run_units", "first_block_input", "repeated_blocks", "parameters", "__call__")


def protocol_problems(model) -> list[str]:
    """What ``model`` gets wrong about :class:`DiffusionModel`: missing members, wrong types, values out of
    their domain. Empty for a conforming model."""
    problems = []
    for name, kind in _MEMBERS.items():
        try:
            value = getattr(model, name)
        except AttributeError:
            problems.append(f"no attribute {name!r}")
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{name} = {value!r} is not {kind}")
    problems += [f"no method {name!r}" for name in _METHODS if not callable(getattr(model, name, None))]
    if problems:
        return problems
    if model.task not in TASKS:
        problems.append(f"task {model.task!r} is not one of {TASKS}")
    if model.conditioning not in CONDITIONINGS:
        problems.append(f"conditioning {model.conditioning!r} is not one of {CONDITIONINGS}")
    if model.conditioning == "text" and model.num_classes:
        problems.append("a text model has no classes")
    if (model.null_label is None) != (model.num_classes == 0):
        problems.append(f"null_label {model.null_label!r} does not fit num_classes {model.num_classes}")
    if model.num_units < 1:
        problems.append(f"num_units {model.num_units} < 1")
    if not all(isinstance(name, str) for name in model.sublayers):
        problems.append(f"sublayers {model.sublayers!r} are not names")
    return problems


def check_model(model) -> None:
    """Raise ``TypeError`` naming every way ``model`` fails the protocol (a bug of the model or the adapter,
    not of the user)."""
    problems = protocol_problems(model)
    if problems:
        raise TypeError(f"{type(model).__name__} does not implement the skipdit model protocol: "
                        + "; ".join(problems))
