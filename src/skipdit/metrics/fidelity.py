"""Fidelity of a cached run to the uncached run of the same model and seeds (reference §E.1).

The convention is VideoSys / TeaCache's: decode both runs to uint8 RGB, score each image (each frame of a
video), average over frames and return one value per sample; the caller averages over samples. Inputs are
channels-last batches of images (N, H, W, C) or videos (N, F, H, W, C), uint8 or float in [0, data_range].
Every function computes in float64 and returns a float64 tensor (N,).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from ..errors import UserError

# SSIM (Wang et al. 2004): an 11x11 Gaussian window with sigma 1.5 and K1 = 0.01, K2 = 0.03, as in the paper,
# OpenCV's recipe used by VideoSys, and skimage's ``gaussian_weights=True``.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

SampleMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-sample PSNR in dB (N,); for videos the mean of the per-frame PSNRs. Identical images give ``inf``."""
    _check_range(data_range)
    return over_frames(lambda x, y: 10 * torch.log10(data_range**2 / _mse_images(x, y)), a, b, "PSNR")


def over_frames(metric: SampleMetric, a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
    """``metric`` of samples (N, ...) -> (N,), applied to every frame of videos (N, F, H, W, C) and averaged over
    the frames; any other input goes to ``metric`` as it is."""
    if a.shape != b.shape:
        raise UserError(f"{name} needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() != 5:
        return metric(a, b)
    n, f = a.shape[:2]
    return metric(a.flatten(0, 1), b.flatten(0, 1)).view(n, f).mean(dim=1)  # (N * F,) -> (N,)


def _check_images(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[0] == 0:
        raise UserError(f"{name} needs images (N, H, W, C) or videos (N, F, H, W, C) with N >= 1, "
                         f"got shape {tuple(x.shape)}")


def _check_range(data_range: float) -> None:
    if not data_range > 0:
        raise UserError(f"data_range must be positive, got {data_range}")


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error (N,), in the units of the input (uint8: [0, 255])."""
    return over_frames(_mse_images, a, b, "MSE")


def _mse_images(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check_images(a, "MSE")
    return ((a.double() - b.double()) ** 2).flatten(1).mean(dim=1)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-sample SSIM (N,): the mean of the SSIM map over the 'valid' window positions and the channels, so it
    equals skimage's ``structural_similarity(..., gaussian_weights=True, use_sample_covariance=False,
    data_range=data_range, channel_axis=-1)`` per image. 1 for identical images."""
    _check_range(data_range)
    return over_frames(partial(_ssim_images, data_range=data_range), a, b, "SSIM")


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """A normalised 1-D Gaussian (size,) in float64, centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _ssim_images(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    _check_images(a, "SSIM")
    h, w = a.shape[1:3]
    if min(h, w) < SSIM_WINDOW:
        raise UserError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (its Gaussian window), "
                         f"got {h}x{w}")
    x = a.double().permute(0, 3, 1, 2)  # (N, C, H, W)
    y = b.double().permute(0, 3, 1, 2)
    c = x.shape[1]
    # The five local statistics in one grouped, separable, 'valid' convolution.
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5C, H, W)
    g = gaussian_window().to(x.device)
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(5 * c, 1, -1, 1), groups=5 * c)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(5 * c, 1, 1, -1), groups=5 * c)  # (N, 5C, H-10, W-10)
    mu_x, mu_y, xx, yy, xy = stats.chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y  # population (co)variances
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(dim=1)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample cosine similarity (N,) of the flattened samples, e.g. final features (N, ...). Videos
    (N, F, H, W, C) are compared frame by frame and averaged. A sample of norm zero gives 0, as in
    ``torch.nn.functional.cosine_similarity``."""
    return over_frames(partial(_cosine_samples, eps=eps), a, b, "cosine similarity")


def _cosine_samples(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    if a.dim() < 2 or a.shape[0] == 0:
        raise UserError(f"cosine similarity needs a batch (N, ...) with N >= 1, got shape {tuple(a.shape)}")
    x, y = a.double().flatten(1), b.double().flatten(1)
    return (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(eps)
