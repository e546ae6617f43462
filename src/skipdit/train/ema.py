"""Exponential moving average of the weights: ``ema = decay * ema + (1 - decay) * theta`` after each
optimizer step (DiT: decay 0.9999, over every parameter, frozen ones included)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UserError


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode, to be updated with :func:`update_ema_`."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema_(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """One EMA step over all parameters. ``lerp(ema, theta, 1 - decay)`` is the formula above."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if len(ema_params) != len(params):
        raise UserError("EMA and model have different parameters")
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # one fused kernel per dtype/device group
