"""Moving digits: the built-in video data.

Real handwritten digits (scikit-learn's ``load_digits``: 1,797 8x8 images, values 0..16) at their native
8x8 resolution on a black canvas (16x16 by default), moving one pixel per frame left, right, up or down.
Each video comes with a caption such as "the digit 7 moves up", so the same data serves class-, motion- and
text-conditioned video models.

Geometry. Rows grow downwards, columns to the right; "up" lowers the row. Along the motion axis the digit's
top-left corner takes the positions ``start, start +- 1, ...``; the path of ``num_frames - 1`` pixels is centred
in the ``canvas - 8`` free pixels (rounding towards the top-left), so for a 16x16 canvas and 8 frames "right"
and "down" start at 0 and "left" and "up" start at 8. The other coordinate is the ``offset`` (0 .. canvas - 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from .captions import NUMBER_WORDS
from .digits import load_digits8

MOTIONS = ("left", "right", "up", "down")  # motion id = index
MOTION_PHRASES = ("to the left", "to the right", "up", "down")
# Keys: {digit} (numeral), {word} (number word), {motion} (a phrase of MOTION_PHRASES). The first is the canonical one.
CAPTION_TEMPLATES = (
    "the digit {digit} moves {motion}",
    "a handwritten {digit} moving {motion}",
    "the number {word} goes {motion}",
    "digit {digit} sliding {motion}",
)
DIGIT_SIZE = 8
NUM_DIGIT_CLASSES = 10
# (d_row, d_col) per frame for each motion
_STEPS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def caption(digit: int, motion: int, template: int = 0) -> str:
    """``caption(7, MOTIONS.index("up")) == "the digit 7 moves up"``."""
    if not 0 <= digit < NUM_DIGIT_CLASSES:
        raise UserError(f"digit must be in 0..9, got {digit}")
    _check_motion(motion)
    if not 0 <= template < len(CAPTION_TEMPLATES):
        raise UserError(f"template must be in 0..{len(CAPTION_TEMPLATES) - 1}, got {template}")
    return CAPTION_TEMPLATES[template].format(digit=digit, word=NUMBER_WORDS[digit], motion=MOTION_PHRASES[motion])


def all_captions() -> list[str]:
    """Every digit x motion x template caption; the id of ``caption(d, m, t)`` is ``(d * 4 + m) * T + t``."""
    return [caption(d, m, t) for d in range(NUM_DIGIT_CLASSES) for m in range(len(MOTIONS))
            for t in range(len(CAPTION_TEMPLATES))]


def _check_motion(motion: int) -> None:
    if not 0 <= int(motion) < len(MOTIONS):
        raise UserError(f"motion must be an index into {MOTIONS}, got {motion}")


def _check_geometry(num_frames: int, canvas: int) -> None:
    if num_frames < 1:
        raise UserError(f"num_frames must be >= 1, got {num_frames}")
    if canvas < DIGIT_SIZE + num_frames - 1:
        raise UserError(f"a {canvas}x{canvas} canvas is too small for {num_frames} frames: an 8x8 digit moving "
                         f"1 px per frame needs canvas >= {DIGIT_SIZE + num_frames - 1}")


def start_position(motion: int, num_frames: int, canvas: int) -> int:
    """The coordinate along the motion axis at frame 0 (see the module docstring)."""
    _check_motion(motion)
    _check_geometry(num_frames, canvas)
    lo = (canvas - DIGIT_SIZE - (num_frames - 1)) // 2
    forward = sum(_STEPS[MOTIONS[motion]]) > 0
    return lo if forward else canvas - DIGIT_SIZE - lo


def _render(images8: torch.Tensor, motions: torch.Tensor, offsets: torch.Tensor, num_frames: int,
            canvas: int) -> torch.Tensor:
    """(N, 8, 8) digits in [-1, 1] -> (N, F, canvas, canvas) videos on a -1 background."""
    n = len(images8)
    starts = torch.tensor([start_position(m, num_frames, canvas) for m in range(len(MOTIONS))])[motions]  # (N,)
    steps = torch.tensor([_STEPS[m] for m in MOTIONS])[motions]  # (N, 2): (d_row, d_col)
    along = starts[:, None] + torch.arange(num_frames) * steps.sum(1, keepdim=True)  # (N, F)
    vertical = (steps[:, 0] != 0)[:, None]  # (N, 1)
    across = offsets[:, None].expand(n, num_frames)  # (N, F)
    top, left = torch.where(vertical, along, across), torch.where(vertical, across, along)  # (N, F) each
    pixel = torch.arange(DIGIT_SIZE)
    rows = (top[:, :, None, None] + pixel[:, None]).expand(n, num_frames, DIGIT_SIZE, DIGIT_SIZE)  # (N, F, 8, 8)
    cols = (left[:, :, None, None] + pixel).expand(n, num_frames, DIGIT_SIZE, DIGIT_SIZE)  # (N, F, 8, 8)
    videos = torch.full((n, num_frames, canvas, canvas), -1.0)
    item = torch.arange(n)[:, None, None, None]
    frame = torch.arange(num_frames)[None, :, None, None]
    videos[item, frame, rows, cols] = images8[:, None].to(videos.dtype).expand(-1, num_frames, -1, -1)
    return videos


def moving_digit(image8: torch.Tensor, motion: int, *, num_frames: int = 8, canvas: int = 16,
                 offset: int = 0) -> torch.Tensor:
    """One video (F, canvas, canvas) in [-1, 1] of an 8x8 digit in [-1, 1] moving 1 px per frame.

    ``offset`` is the digit's position on the axis it does not move along (0 .. canvas - 8).
    """
    if tuple(image8.shape) != (DIGIT_SIZE, DIGIT_SIZE):
        raise UserError(f"image8 must be (8, 8), got {tuple(image8.shape)}")
    _check_motion(motion)
    _check_geometry(num_frames, canvas)
    if not 0 <= offset <= canvas - DIGIT_SIZE:
        raise UserError(f"offset must be in 0..{canvas - DIGIT_SIZE}, got {offset}")
    return _render(image8[None].float(), torch.tensor([int(motion)]), torch.tensor([int(offset)]), num_frames,
                   canvas)[0]


@dataclass
class MovingDigits:
    """Precomputed moving-digit videos; item ``n`` is ``(copy * 1797 + image) * 4 + motion``."""

    videos: torch.Tensor  # (N, 1, F, canvas, canvas) in [-1, 1]: skipdit's video layout (channels, then frames)
    labels: torch.Tensor  # (N,) digit
    motions: torch.Tensor  # (N,) index into MOTIONS
    caption_ids: torch.Tensor  # (N,) index into captions
    captions: list[str]  # all_captions(): every digit x motion x template, in that order
    offsets: torch.Tensor  # (N,) the digit's coordinate across the motion axis

    def __len__(self) -> int:
        return len(self.videos)

    def caption(self, index: int) -> str:
        return self.captions[int(self.caption_ids[index])]


def make_moving_digits(
    *, num_frames: int = 8, canvas: int = 16, seed: int = 0, copies: int = 1, per_class: int | None = None,
) -> MovingDigits:
    """Every scikit-learn digit x every motion x ``copies``: N = 1797 * 4 * copies videos. ``per_class``
    keeps only the first that many digits of each class (in scikit-learn's order).

    Each video draws its cross-axis offset and its caption template from ``seed`` (a CPU generator), so the
    dataset is the same on every machine.
    """
    _check_geometry(num_frames, canvas)
    if copies < 1:
        raise UserError(f"copies must be >= 1, got {copies}")
    images, digit_labels = load_digits8()  # (D, 8, 8), (D,)
    if per_class is not None:
        if per_class < 1:
            raise UserError(f"per_class must be >= 1, got {per_class}")
        keep = torch.cat([torch.nonzero(digit_labels == d).flatten()[:per_class] for d in range(NUM_DIGIT_CLASSES)])
        images, digit_labels = images[keep.sort().values], digit_labels[keep.sort().values]
    num_motions, num_templates = len(MOTIONS), len(CAPTION_TEMPLATES)
    source = torch.arange(len(images)).repeat_interleave(num_motions).repeat(copies)  # (N,) image index
    motions = torch.arange(num_motions).repeat(len(images) * copies)  # (N,)
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, canvas - DIGIT_SIZE + 1, (len(source),), generator=generator)
    templates = torch.randint(0, num_templates, (len(source),), generator=generator)
    labels = digit_labels[source]
    videos = _render(images[source], motions, offsets, num_frames, canvas)  # (N, F, canvas, canvas)
    return MovingDigits(
        videos=videos.unsqueeze(1),  # (N, 1, F, canvas, canvas)
        labels=labels,
        motions=motions,
        caption_ids=(labels * num_motions + motions) * num_templates + templates,
        captions=all_captions(),
        offsets=offsets,
    )
