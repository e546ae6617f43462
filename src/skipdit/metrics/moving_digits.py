"""Does a moving-digits video show the right digit moving the right way?

* **motion**: the displacement of the centre of mass of the bright pixels from the first frame to the
  last, rounded to the nearest of the four directions of :data:`skipdit.datasets.MOTIONS`;
* **digit**: each frame is cropped to the 8x8 box around its centre of mass, upsampled to 16x16 as the
  digits dataset is, and classified by the built-in digits evaluator; the video's digit is the vote.

Both are checked on the real moving digits in the tests (100 % motion, ~96 % digit accuracy), so they
measure the generator, not the yardstick.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..datasets import DIGIT_SIZE, MOTIONS
from ..errors import UserError
from .digits import DigitsEvaluator

# (d_row, d_col) unit vectors of MOTIONS
_DIRECTIONS = torch.tensor([[0.0, -1.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])


def _intensity(videos: torch.Tensor) -> torch.Tensor:
    """uint8 (N, F, H, W, C) -> float (N, F, H, W) in [0, 1]."""
    if videos.dtype != torch.uint8 or videos.ndim != 5:
        raise UserError(f"expected uint8 videos (N, F, H, W, C), got {videos.dtype} {tuple(videos.shape)}")
    return videos.float().mean(-1) / 255.0


def centres_of_mass(videos: torch.Tensor) -> torch.Tensor:
    """(N, F, 2) (row, column) of each frame's brightness; the canvas centre for a black frame."""
    w = _intensity(videos)
    _, _, h, wd = w.shape
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
    cols = torch.arange(wd, dtype=torch.float32).view(1, 1, 1, wd)
    mass = w.sum((2, 3)).clamp_min(1e-6)
    centre = torch.stack([(w * rows).sum((2, 3)) / mass, (w * cols).sum((2, 3)) / mass], dim=-1)
    empty = (w.sum((2, 3)) < 1e-6).unsqueeze(-1)
    return torch.where(empty, torch.tensor([(h - 1) / 2, (wd - 1) / 2]), centre)


def motions(videos: torch.Tensor) -> torch.Tensor:
    """(N,) motion id (index into MOTIONS) of each video."""
    com = centres_of_mass(videos)
    shift = com[:, -1] - com[:, 0]  # (N, 2)
    return (shift @ _DIRECTIONS.T).argmax(dim=1)


def digit_crops(videos: torch.Tensor) -> torch.Tensor:
    """(N, F, 1, 16, 16) in [-1, 1]: the 8x8 box around each frame's centre of mass, as digits-dataset images."""
    w = _intensity(videos)
    n, f, h, wd = w.shape
    corner = (centres_of_mass(videos) - (DIGIT_SIZE - 1) / 2).round().long()
    corner[..., 0] = corner[..., 0].clamp(0, h - DIGIT_SIZE)
    corner[..., 1] = corner[..., 1].clamp(0, wd - DIGIT_SIZE)
    crops = torch.stack([
        w[i, k, r : r + DIGIT_SIZE, c : c + DIGIT_SIZE]
        for i in range(n) for k, (r, c) in enumerate(corner[i].tolist())
    ])  # (N*F, 8, 8)
    up = F.interpolate(crops.unsqueeze(1), size=(16, 16), mode="bilinear", align_corners=False)
    return (up * 2 - 1).clamp(-1, 1).view(n, f, 1, 16, 16)


def digits(videos: torch.Tensor, evaluator: DigitsEvaluator | None = None) -> torch.Tensor:
    """(N,) the digit each video shows: the most frequent prediction over its frames."""
    evaluator = evaluator or DigitsEvaluator.load()
    crops = digit_crops(videos)
    n, f = crops.shape[:2]
    votes = evaluator.predict(crops.flatten(0, 1)).view(n, f)
    return votes.mode(dim=1).values


def score(videos: torch.Tensor, labels, motion_ids=None, evaluator: DigitsEvaluator | None = None) -> dict:
    """``{"digit_accuracy", "motion_accuracy"}`` against the intended digits (and motions, if given)."""
    labels = torch.as_tensor(labels)
    out = {"digit_accuracy": (digits(videos, evaluator) == labels).float().mean().item()}
    if motion_ids is not None:
        out["motion_accuracy"] = (motions(videos) == torch.as_tensor(motion_ids)).float().mean().item()
    return out


__all__ = ["MOTIONS", "centres_of_mass", "digit_crops", "digits", "motions", "score"]
