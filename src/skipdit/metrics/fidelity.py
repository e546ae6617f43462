"""Fidelity of a cached run to the uncached run of the same model and seeds (reference §E.1)."""

from __future__ import annotations

import torch


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-sample PSNR in dB between two image batches of the same shape (uint8 or float).
    Identical samples give ``inf``."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)
