"""Images on disk: uint8 conversion, per-sample PNGs, labelled grids, seed lists."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounding as torchvision's ``save_image`` does."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu()


def parse_int_list(text: str, what: str = "seeds") -> list[int]:
    """``"0-3,7,10-11"`` -> ``[0, 1, 2, 3, 7, 10, 11]``."""
    out = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"invalid {what} {text!r}: use numbers and ranges like 0-7,10")
        lo, hi = int(match[1]), int(match[2] or match[1])
        if hi < lo:
            raise ValueError(f"invalid {what} range {part!r}: end before start")
        out.extend(range(lo, hi + 1))
    if not out:
        raise ValueError(f"no {what} given")
    return out


def _pil(image: torch.Tensor):
    from PIL import Image

    array = image.numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def sample_name(seed: int, label: int) -> str:
    return f"{seed:06d}-{label}.png"


def save_samples(images: torch.Tensor, seeds: Sequence[int], labels: Sequence[int], out_dir) -> list[Path]:
    """One PNG per sample, named ``<seed>-<label>.png`` (e.g. ``000007-3.png``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, seed, label in zip(images, seeds, labels):
        path = out_dir / sample_name(seed, label)
        _pil(image).save(path)
        paths.append(path)
    return paths


def make_grid(images: torch.Tensor, captions: Sequence[str], ncols: int | None = None, min_cell: int = 96):
    """A PIL grid with a caption under each image; small images are enlarged (nearest) to ``min_cell``."""
    from PIL import Image, ImageDraw

    n, h, w, _ = images.shape
    ncols = ncols or min(n, math.ceil(math.sqrt(n)) if n > 8 else n)
    zoom = max(1, math.ceil(min_cell / max(h, w)))
    cw, ch, text_h, pad = w * zoom, h * zoom, 14, 4
    rows = math.ceil(n / ncols)
    grid = Image.new("RGB", (ncols * (cw + pad) + pad, rows * (ch + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for k, (image, caption) in enumerate(zip(images, captions)):
        r, c = divmod(k, ncols)
        x, y = pad + c * (cw + pad), pad + r * (ch + text_h + pad)
        cell = _pil(image).convert("RGB").resize((cw, ch), Image.NEAREST)
        grid.paste(cell, (x, y))
        draw.text((x + 2, y + ch + 1), caption, fill="black")
    return grid


def save_grid(images: torch.Tensor, captions: Sequence[str], path, ncols: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, captions, ncols).save(path)
    return path

