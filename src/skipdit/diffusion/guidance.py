"""Classifier-free guidance as a wrapper around ``model_fn(x, t, *cond)``.

A condition is a tuple of per-sample tensors: ``(labels,)`` for class models, ``(embeddings, mask)``
for text models. The unconditional branch gets ``uncond``: the null label, or the negative prompt.

``mode="all"`` guides every noise-prediction channel (the first ``eps_channels`` of the output);
``mode="dit_legacy"`` guides only the first 3, as the official DiT ``forward_with_cfg`` does, which
is needed to reproduce the published DiT / Skip-DiT numbers (reference §C, quirk 13). Any learned-
variance channels always come from the conditional branch.

Every call names its branch (``model_fn(x, t, *cond, branch=...)``): ``"cond"``, ``"uncond"``, or
``"both"`` for the two batched in one call, so a cache keeps each branch's tensors apart whatever the
number of calls per step. ``guide=False`` skips guidance for one call: the conditional branch alone, its
output as it is (the sampling loop passes it on the steps a cache plans unguided: T-GATE's ``cfg=drop``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import UserError

CFG_MODES = ("all", "dit_legacy")

Condition = tuple[torch.Tensor | None, ...]


def classifier_free_guidance(
    model_fn: Callable[..., torch.Tensor], scale: float, eps_channels: int, *, mode: str = "all",
    batched: bool = True,
) -> Callable[[torch.Tensor, torch.Tensor, Condition, Condition], torch.Tensor]:
    """Return ``guided(x, t, cond, uncond, guide=True)`` over ``model_fn(x, t, *cond, branch=name)``.
    ``batched=True`` runs [cond, uncond] as one batch of 2N (one call per step, as upstream); ``batched=False``
    makes two calls of N, which halves peak activation memory. With ``scale == 1``, or ``guide=False``, only
    the conditional branch runs (one call of N) and its output is returned."""
    if mode not in CFG_MODES:
        raise UserError(f"unknown guidance mode {mode!r}; valid: {', '.join(CFG_MODES)}")
    if not math.isfinite(scale) or scale < 1.0:  # NaN would pass `scale < 1` and decode black images
        raise UserError(f"guidance scale must be a finite number >= 1 (1 disables guidance), got {scale}")
    if scale == 1.0:
        return lambda x, t, cond, uncond, guide=True: model_fn(x, t, *cond, branch="cond")
    guided = 3 if mode == "dit_legacy" else eps_channels

    def guided_fn(x: torch.Tensor, t: torch.Tensor, cond: Condition, uncond: Condition, guide: bool = True):
        if not guide:
            return model_fn(x, t, *cond, branch="cond")
        if batched:
            both = tuple(None if c is None else torch.cat([c, u]) for c, u in zip(cond, uncond))
            out_c, out_u = model_fn(torch.cat([x, x]), torch.cat([t, t]), *both, branch="both").chunk(2)
        else:
            out_c, out_u = model_fn(x, t, *cond, branch="cond"), model_fn(x, t, *uncond, branch="uncond")
        mixed = out_u[:, :guided] + scale * (out_c[:, :guided] - out_u[:, :guided])
        return torch.cat([mixed, out_c[:, guided:]], dim=1)

    return guided_fn
