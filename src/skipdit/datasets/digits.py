"""The handwritten digits: scikit-learn's ``load_digits`` (1,797 8x8 images, values 0..16, 10 classes).

* :func:`load_digits_tensors`: bilinearly upsampled to 16x16 and scaled to [-1, 1], the images of the built-in
  digits models, of the digits evaluator and of the ``digits-real`` reference set;
* :func:`load_digits8`: at their native 8x8, scaled to [-1, 1], what the moving digits draw;
* :func:`shift_by_one`: the one-pixel shifts that both the training loop and the digits evaluator augment with.
"""

from __future__ import annotations

import torch

from ..errors import UserError

DIGITS_SIZE = 16


def _sklearn_digits(what: str):
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise UserError(f"{what} scikit-learn: pip install 'skipdit[train]'") from err
    return load_digits()


def load_digits_tensors(size: int = DIGITS_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, size, size) in [-1, 1], and their labels (N,)."""
    digits = _sklearn_digits("the digits dataset needs")
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return (images * 2 - 1).clamp(-1, 1), torch.from_numpy(digits.target).long()


def load_digits8() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits at 8x8 as (N, 8, 8) in [-1, 1] (``x / 8 - 1``; exact in float32), labels (N,)."""
    digits = _sklearn_digits("the digits datasets need")
    return torch.from_numpy(digits.images).float() / 8 - 1, torch.from_numpy(digits.target).long()


def shift_by_one(x: torch.Tensor, u: torch.Tensor, normals: torch.Tensor | None) -> torch.Tensor:
    """Translate each image by -1, 0 or +1 pixels along each axis (``u[:, 0:2]``), padding with black."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    offsets = (u[:, :2] * 3).long().clamp(max=2)  # 0, 1, 2 -> shift +1, 0, -1
    return torch.stack([padded[k, :, dy : dy + h, dx : dx + w] for k, (dy, dx) in enumerate(offsets.tolist())])
