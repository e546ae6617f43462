"""Classifier-free guidance as a wrapper around ``model_fn(x, t, y)``.

``mode="all"`` guides every noise-prediction channel (the first ``eps_channels`` of the output);
``mode="dit_legacy"`` guides only the first 3, as the official DiT ``forward_with_cfg`` does, which
is needed to reproduce the published DiT / Skip-DiT numbers (reference §C, quirk 13). Any learned-
variance channels always come from the conditional branch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CFG_MODES = ("all", "dit_legacy")


def classifier_free_guidance(
    model_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], scale: float, null_label: int,
    eps_channels: int, *, mode: str = "all", batched: bool = True,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return ``guided(x, t, y)``. ``batched=True`` runs [cond, uncond] as one batch of 2N (one call per
    step, as upstream); ``batched=False`` makes two calls of N, which halves peak activation memory."""
    if mode not in CFG_MODES:
        raise ValueError(f"unknown guidance mode {mode!r}; valid: {', '.join(CFG_MODES)}")
    if scale < 1.0:
        raise ValueError(f"guidance scale must be >= 1 (1 disables guidance), got {scale}")
    if scale == 1.0:
        return model_fn
    guided = 3 if mode == "dit_legacy" else eps_channels

    def guided_fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        null = torch.full_like(y, null_label)
        if batched:
            cond, uncond = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        else:
            cond, uncond = model_fn(x, t, y), model_fn(x, t, null)
        mixed = uncond[:, :guided] + scale * (cond[:, :guided] - uncond[:, :guided])
        return torch.cat([mixed, cond[:, guided:]], dim=1)

    return guided_fn
