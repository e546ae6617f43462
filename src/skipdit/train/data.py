"""Training data: training sets, their augmentations, and the per-step batch sampler.

Datasets return fixed items; all randomness (flips, shifts, latent sampling) is applied by
``TrainData.augment`` from numbers the training loop draws for the *global* batch of each step. So
sample ``j`` of step ``s`` is the same whether one process or eight compute it, and a resumed run sees
exactly the batches an uninterrupted one would have.

Kinds (the built-in data come from :mod:`skipdit.datasets`):

* ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 digits, 10 classes), bilinearly upsampled to
  16x16 and scaled to [-1, 1]; augmentation shifts each image by up to one pixel.
* ``captioned-digits``: the same digits as one-frame videos (1, 1, 16, 16), each once per caption phrasing
  ("a handwritten seven", "the digit 7", ...), for a text-to-image Latte-T2V; one-pixel shifts as above.
* ``moving-digits``: videos of those digits moving on a canvas (:mod:`skipdit.datasets.moving_digits`); items
  carry a caption id, which gives the class (the digit) for class models and the caption for text models.
* ``image-folder``: ``ROOT/<class>/*.png|jpg|...`` (classes in sorted order), ADM centre crop; flip.
* ``latents``: shards from :func:`extract_latents` holding the VAE posterior (mean, std) of each image
  and of its mirror image; augmentation picks one and samples it, as DiT's ``latent_dist.sample()``.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..datasets import (
    CAPTION_TEMPLATES,
    MOTIONS,
    captioned_digits,
    load_digits_tensors,
    make_moving_digits,
    shift_by_one,
)
from ..errors import UserError
from ..io import IMAGE_SUFFIXES, is_listed, open_image
from .config import DataConfig

LATENT_INDEX = "index.json"


@dataclass
class TrainData:
    dataset: Dataset  # item -> (tensor, label), or (tensor, caption id) for captioned data
    sample_shape: tuple[int, ...]  # (C, H, W) or (C, F, H, W) of a model input
    num_classes: int
    # (items, uniforms (n, 3) in [0, 1), standard normals of the model-input shape) -> model inputs
    augment: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    uses_normals: bool = False  # whether augment reads its normals (only latents sample the posterior)
    captions: list[str] | None = None  # captioned data: the caption of each caption id
    caption_labels: torch.Tensor | None = None  # captioned data: the class of each caption id

    def labels(self, targets: torch.Tensor) -> torch.Tensor:
        """Class labels of a batch's targets (captioned data map caption ids to classes)."""
        return targets if self.caption_labels is None else self.caption_labels[targets]


def build_data(config: DataConfig) -> TrainData:
    if config.kind == "digits":
        return digits_data()
    if config.kind == "captioned-digits":
        return captioned_digits_data()
    if config.kind == "moving-digits":
        return moving_digits_data(config.num_frames, config.canvas, config.copies, config.per_class)
    if config.kind == "image-folder":
        dataset = ImageFolder(config.path, config.image_size)
        augment = _flip if config.flip else _identity
        return TrainData(dataset, (3, config.image_size, config.image_size), len(dataset.classes), augment)
    dataset = LatentShards(config.path)
    return TrainData(dataset, dataset.sample_shape, dataset.num_classes, dataset.augment(config.flip), True)


# -- digits -------------------------------------------------------------------------------------------
class TensorItems(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def digits_data() -> TrainData:
    images, labels = load_digits_tensors()
    return TrainData(TensorItems(images, labels), tuple(images.shape[1:]), 10, shift_by_one)


def captioned_digits_data() -> TrainData:
    """:func:`skipdit.datasets.captioned_digits`: every digit once per caption phrasing, as a one-frame video."""
    data = captioned_digits()
    return TrainData(TensorItems(data.videos, data.caption_ids), tuple(data.videos.shape[1:]), 10, _shift_frames,
                     captions=data.captions, caption_labels=data.caption_labels)


def _shift_frames(x: torch.Tensor, u: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """:func:`shift_by_one` on one-frame videos (N, C, 1, H, W)."""
    return shift_by_one(x.squeeze(2), u, normals).unsqueeze(2)


def moving_digits_data(num_frames: int, canvas: int, copies: int = 2, per_class: int | None = None) -> TrainData:
    """Each digit x motion ``copies`` times, with seeded offsets and caption phrasings (8 MB per 1,000
    videos of 8 16x16 frames)."""
    data = make_moving_digits(num_frames=num_frames, canvas=canvas, copies=copies, per_class=per_class)
    caption_labels = torch.arange(len(data.captions)) // (len(MOTIONS) * len(CAPTION_TEMPLATES))  # see all_captions
    return TrainData(TensorItems(data.videos, data.caption_ids), tuple(data.videos.shape[1:]), 10, _identity,
                     captions=data.captions, caption_labels=caption_labels)


def _flip(x: torch.Tensor, u: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    return torch.where((u[:, 2] < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)


def _identity(x: torch.Tensor, u: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    return x


# -- image folder ---------------------------------------------------------------------------------------
def center_crop(image, size: int):
    """ADM / DiT centre crop: halve with a box filter while the short side is >= 2x ``size``, resize
    the short side to ``size`` with bicubic, then crop the centre."""
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return Image.fromarray(array[top : top + size, left : left + size])


class ImageFolder(Dataset):
    """``root/<class name>/<image>``; class ids follow the sorted folder names."""

    def __init__(self, root: str | os.PathLike, image_size: int):
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"data path not found: {root}")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.files: list[tuple[Path, int]] = [
            (f, label) for label, name in enumerate(self.classes) for f in sorted((root / name).rglob("*"))
            if f.suffix.lower() in IMAGE_SUFFIXES and is_listed(f)  # no hidden or temporary files
        ]
        if not self.files:
            raise UserError(f"no images in {root}: expected {root}/<class>/<image>{'|'.join(IMAGE_SUFFIXES)}")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, label = self.files[index]
        image = center_crop(open_image(path), self.image_size)  # a damaged file: a UserError naming it
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, H, W)
        return x, label


# -- latent shards ---------------------------------------------------------------------------------------
class LatentShards(Dataset):
    """Shards ``shard-XXXXX.safetensors`` with ``mean``, ``std`` (N, 2, C, h, w: original and mirrored)
    and ``labels`` (N,), described by ``index.json``. Items are read lazily from the memory-mapped files."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        index_path = root / LATENT_INDEX
        if not index_path.is_file():
            raise UserError(f"no latent shards at {root} (missing {LATENT_INDEX}); "
                                    "write them with `skipdit extract-latents`")
        index = json.loads(index_path.read_text())
        self.root = root
        self.shards = [s["file"] for s in index["shards"]]
        self.offsets = np.cumsum([0] + [s["count"] for s in index["shards"]]).tolist()
        if self.offsets[-1] == 0:
            raise UserError(f"the latent dataset at {root} is empty")
        self.scaling_factor = float(index["scaling_factor"])
        self.num_classes = int(index["num_classes"])
        self.sample_shape = tuple(index["latent_shape"])
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int):
        from safetensors import safe_open

        shard = bisect.bisect_right(self.offsets, index) - 1
        if shard not in self._open:
            self._open[shard] = safe_open(str(self.root / self.shards[shard]), framework="pt")
        f, row = self._open[shard], index - self.offsets[shard]
        moments = torch.stack([f.get_slice("mean")[row], f.get_slice("std")[row]]).float()  # (2, 2, C, h, w)
        return moments * self.scaling_factor, int(f.get_slice("labels")[row])

    def augment(self, flip: bool) -> Callable:
        def sample_posterior(moments: torch.Tensor, u: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
            mirrored = (u[:, 2] < 0.5) if flip else torch.zeros(len(u), dtype=torch.bool)
            rows, version = torch.arange(len(moments)), mirrored.long()
            return moments[rows, 0, version] + moments[rows, 1, version] * normals  # mean + std * eps

        return sample_posterior


@torch.no_grad()
def extract_latents(
    image_dir: str | os.PathLike, vae_dir: str | os.PathLike, out_dir: str | os.PathLike, image_size: int, *,
    shard_size: int = 10_000, batch_size: int = 32, device: str = "cpu", progress: bool = True,
) -> Path:
    """Encode an image folder with a local ``AutoencoderKL`` into latent shards for ``data.kind=latents``.

    Each image is stored twice (as it is and mirrored), as the posterior mean and std in float16. The
    index is written last, so an interrupted extraction leaves no dataset that looks complete.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..vae import load_vae

    if image_size % 8:
        raise UserError(f"image size {image_size} is not divisible by 8 (the VAE's downsampling)")
    dataset = ImageFolder(image_dir, image_size)
    vae = load_vae(vae_dir, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards, buffers = [], {"mean": [], "std": [], "labels": []}

    def flush():
        if not buffers["labels"]:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        tensors = {k: torch.cat(v).contiguous() for k, v in buffers.items()}
        save_file(tensors, str(out / name))
        shards.append({"file": name, "count": len(tensors["labels"])})
        for v in buffers.values():
            v.clear()

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=min(4, os.cpu_count() or 1))
    dtype = next(vae.vae.parameters()).dtype
    for x, y in tqdm(loader, desc="encoding", disable=not progress):
        both = torch.cat([x, x.flip(-1)]).to(device, dtype)
        posterior = vae.vae.encode(both).latent_dist
        mean, std = (t.float().cpu().unflatten(0, (2, len(x))).transpose(0, 1) for t in (posterior.mean, posterior.std))
        buffers["mean"].append(mean.half())
        buffers["std"].append(std.half())
        buffers["labels"].append(y.long())
        if sum(len(b) for b in buffers["labels"]) >= shard_size:
            flush()
    flush()
    index = {
        "shards": shards, "scaling_factor": vae.scaling_factor, "num_classes": len(dataset.classes),
        "classes": dataset.classes, "image_size": image_size,
        "latent_shape": [vae.latent_channels, image_size // 8, image_size // 8],
    }
    tmp = out / (LATENT_INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / LATENT_INDEX)
    return out


# -- batches ---------------------------------------------------------------------------------------------
class StepBatches(Sampler[list[int]]):
    """This process's share of the global batch of each step ``start .. stop-1``.

    The global stream of indices is the concatenation of one seeded permutation per epoch; step ``s``
    takes positions ``s*B .. (s+1)*B-1`` of it and process ``r`` of ``W`` the ``r``-th of ``W`` equal parts.
    """

    def __init__(self, size: int, global_batch: int, start: int, stop: int, seed: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise UserError(f"global_batch {global_batch} is not divisible by the {world} processes")
        self.size, self.global_batch, self.start, self.stop = size, global_batch, start, stop
        self.seed, self.rank, self.world = seed, rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        share = self.global_batch // self.world
        for step in range(self.start, self.stop):
            yield self.global_indices(step)[self.rank * share : (self.rank + 1) * share].tolist()

    def global_indices(self, step: int) -> torch.Tensor:
        positions = torch.arange(step * self.global_batch, (step + 1) * self.global_batch)
        epochs, within = positions // self.size, positions % self.size
        out = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            here = epochs == epoch
            out[here] = self._perm(epoch)[within[here]]
        return out

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 3:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = torch.randperm(self.size, generator=torch.Generator().manual_seed(
                mix_seed(self.seed, epoch, salt=1)))
        return self._perms[epoch]


def mix_seed(*values: int, salt: int = 0) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence), for per-step generators."""
    return int(np.random.SeedSequence([salt, *[int(v) for v in values]]).generate_state(1, np.uint64)[0] >> 1)

