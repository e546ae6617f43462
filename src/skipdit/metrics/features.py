"""Feature networks for the distribution metrics (FID, sFID, IS, precision / recall), behind one interface.

    net = load_feature_net("inception:pt_inception-2015-12-05-6726825d.pth", device="cuda")
    feats = net.features(open_images("samples.npz"), ("pool", "spatial"))   # {"pool": (N, 2048), ...}
    net.pool(images), net.spatial(images), net.logits(images)                # one output each

Images are uint8 (or float in [0, 255]) arrays or tensors (N, H, W, C), C in (1, 3), or an :class:`ImageSource`
(:func:`open_images`: a folder of PNG / JPEG files, sorted by name, or an ``.npz`` read in batches, so 50k samples
never sit in memory at once). Outputs are float32 numpy arrays.

Networks (``load_feature_net`` specs):

* ``inception:PATH``: Inception-v3 as the FID code uses it (the TF graph ``inception-2015-12-05``), written here
  with torchvision's ``Inception3`` parameter names, so pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
  (or torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``) loads as it is. It differs from
  torchvision's network as pytorch-fid's ``FIDInceptionA/C/E_1/E_2`` do: the branch average pools leave the
  padding out of the mean (``count_include_pad=False``, as TF does), the last block's pool branch is a max pool,
  BN eps is 1e-3, convolutions have no bias, and ``fc`` has 1008 classes.

  - ``pool``: the 2048-d average pool after ``Mixed_7c`` (TF ``pool_3``).
  - ``spatial``: the sFID features of the ADM evaluator, TF ``mixed_6/conv:0`` (the ReLU after the batch norm of
    ``mixed_6``'s 1x1 branch). The TF graph names its eleven mixed blocks ``mixed, mixed_1, ..., mixed_10``;
    the weight converter of torch-fidelity (``utils/util_convert_inception_weights.py``) maps ``mixed_6/conv``
    onto ``Mixed_6d.branch1x1`` (mixed..mixed_2 = 5b..5d, mixed_3 = 6a, mixed_4..mixed_7 = 6b..6e), so it is the
    output of ``Mixed_6d.branch1x1``: (N, 192, 17, 17). The evaluator keeps ``[..., :7]`` of the NHWC map and
    flattens it, so we take the first 7 channels and flatten in (H, W, C) order: 17 * 17 * 7 = 2023 dims laid
    out like the ``mu_s`` / ``sigma_s`` of the ADM reference batches.
  - ``logits``: ``pool @ fc.weight.T``, 1008 classes, *without* the fc bias, as the IS of the ADM evaluator
    (``softmax/logits/MatMul``), StyleGAN's ``no_output_bias=True`` and torch-fidelity's ``logits_unbiased`` are.

  Preprocessing (``preprocess=``): ``"tf"`` (default) is what the TF graph does after ``ExpandDims``, the input
  the ADM evaluator feeds: a TF 1.x ``ResizeBilinear`` to 299x299 (``align_corners=False`` without half-pixel
  centres: output pixel i samples input coordinate ``i * in / out``), then ``(x - 128) / 128``. StyleGAN's
  TorchScript detector and torch-fidelity do the same. ``"pytorch-fid"`` is pytorch-fid's: ``F.interpolate``
  bilinear with ``align_corners=False`` (half-pixel centres) on ``x / 255``, then ``2 x - 1``.

* ``inception-ts:PATH``: a TorchScript detector such as StyleGAN2-ADA's / clean-fid's ``inception-2015-12-05.pt``,
  called as their metric code does: ``detector(x, return_features=True)`` gives the 2048-d pool features and
  ``detector(x, no_output_bias=True)`` the class probabilities without the fc bias (``logits`` returns their
  log); ``x`` is (N, 3, H, W) float in [0, 255] (StyleGAN passes uint8, clean-fid float; the detector casts and
  resizes itself). It has no spatial features, so no sFID.
* ``digits`` / ``digits:PATH``: the built-in digits classifier (16x16 grey digits): ``pool`` its 64-d features,
  ``logits`` its 10 class logits; no spatial features. The network of the CPU-sized worked example.
* ``PATH``: a TorchScript archive is ``inception-ts``, any other file ``inception``.

Each network has a ``name`` (kind, preprocessing and a hash of the weights file) that saved statistics carry, so
statistics of different networks are never compared (:func:`skipdit.metrics.fid.check_same_net`).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..convert.files import read_torch_file
from ..datasets import load_digits_tensors
from ..errors import UserError
from ..io import IMAGE_SUFFIXES, NpzArray, list_files, read_image

OUTPUTS = ("pool", "spatial", "logits")
INCEPTION_FAMILY = "inception-2015-12-05"  # the TF graph every Inception variant here reproduces
INCEPTION_SIZE = 299
SPATIAL_CHANNELS = 7  # the ADM evaluator's spatial[..., :7]
PREPROCESS = ("tf", "pytorch-fid")
SPECS = "digits, digits:PATH, inception:PATH, inception-ts:PATH, or a path to a .pth / .pt file"


# -- images -----------------------------------------------------------------------------------------------------
class ImageSource:
    """A sized, re-iterable collection of images, read ``batch_size`` at a time as (n, H, W, C) arrays."""

    def __init__(self, batches, count: int):
        self._batches, self.count = batches, count

    def __len__(self) -> int:
        return self.count

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        return self._batches(batch_size)


REAL_DIGITS = "digits-real"  # the built-in reference set: the 1,797 real digits, as the digits models see them


def open_images(path: str | os.PathLike) -> ImageSource:
    """A folder of PNG / JPEG images (sorted by file name; grey stays one channel, other modes become RGB), an
    ``.npz`` whose ``arr_0`` holds images (N, H, W, C) or (N, H, W), as ``sample-many`` and ADM write them, or
    ``digits-real`` (when no such file exists): scikit-learn's 1,797 digits at 16x16, the training data of the
    built-in digits models, as uint8 (N, 16, 16, 1)."""
    path = Path(path)
    if str(path) == REAL_DIGITS and not path.exists():
        return _real_digits()
    if not path.exists():
        raise UserError(f"{path} not found")
    if path.is_dir():
        files = list_files(path, IMAGE_SUFFIXES)  # hidden and temporary files are no samples
        if not files:
            raise UserError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return ImageSource(lambda b: _read_files(files, b), len(files))
    if path.suffix != ".npz":
        raise UserError(f"{path} is neither a folder of images nor an .npz")
    array = NpzArray(path)
    shape = (*array.shape, 1) if len(array.shape) == 3 else array.shape  # (N, H, W): one channel
    if len(shape) != 4 or shape[-1] not in (1, 3) or array.dtype != np.uint8 or not shape[0]:
        # uint8 only: float images in [0, 1] or [-1, 1] would pass a [0, 255] range check and be scored as
        # near-black images; the ADM format and sample-many hold uint8
        raise UserError(
            f"{path}: arr_0 must hold uint8 images (N, H, W, C) with N >= 1 and C in (1, 3), got {array.dtype} "
            f"{array.shape}" + ("; videos need FVD" if len(shape) == 5 else "")
            + ("; convert floats with (x * 255).round().astype(np.uint8)" if array.dtype.kind == "f" else "")
        )
    return ImageSource(lambda b: (rows.reshape(len(rows), *shape[1:]) for _, rows in array.rows(batch_size=b)),
                       shape[0])


def _real_digits() -> ImageSource:
    from ..io import to_uint8

    images = to_uint8(load_digits_tensors()[0]).numpy()  # (1797, 16, 16, 1)
    return ImageSource(lambda b: (images[i : i + b] for i in range(0, len(images), b)), len(images))


def _read_files(files: Sequence[Path], batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(files), batch_size):
        arrays = []
        for f in files[start : start + batch_size]:
            arrays.append(read_image(f))
            if arrays[-1].shape != arrays[0].shape:
                raise UserError(
                    f"{f} is {arrays[-1].shape}, unlike {files[start]} {arrays[0].shape}: "
                    "all images must share one size"
                )
        yield np.stack(arrays)


def _batches(images, batch_size: int) -> Iterator[np.ndarray | torch.Tensor]:
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, ImageSource):
        yield from images.batches(batch_size)
    elif isinstance(images, (np.ndarray, torch.Tensor)):
        yield from (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    else:
        raise TypeError(f"images must be an array, a tensor or an ImageSource, not {type(images).__name__}")


def _to_nchw(batch: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(n, H, W, C) uint8 or float in [0, 255] -> (n, C, H, W) float32 in [0, 255]."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch if batch.flags.writeable and batch.flags.c_contiguous else batch.copy())
    x = batch
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"expected images (N, H, W, C) with C in (1, 3), got shape {tuple(x.shape)}")
    if x.is_floating_point() and len(x) and (x.min() < 0 or x.max() > 255):
        raise UserError(f"float images must be in [0, 255], got values in [{x.min():.3g}, {x.max():.3g}]")
    return x.to(device).permute(0, 3, 1, 2).float()


# -- the interface ----------------------------------------------------------------------------------------------
class FeatureNet:
    """A frozen network that maps images to some of ``pool`` (N, D), ``spatial`` (N, D_s), ``logits`` (N, K).

    Subclasses implement ``_forward(x, outputs)`` for one batch ``x`` (n, C, H, W) float in [0, 255] on
    ``self.device``; batching, conversion and checks are here."""

    provides: tuple[str, ...] = ()

    def __init__(self, module: nn.Module, name: str, family: str):
        self.module = module.eval()
        for p in module.parameters():  # (ScriptModules have no requires_grad_)
            p.requires_grad_(False)
        self.name, self.family = name, family
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> FeatureNet:
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def _forward(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def features(
        self, images, outputs: Sequence[str] = ("pool",), *, batch_size: int = 64, progress: bool = False
    ) -> dict[str, np.ndarray]:
        """The requested outputs of every image, computed in one pass, as float32 arrays."""
        unknown = [o for o in outputs if o not in self.provides]
        if unknown or not outputs:
            raise UserError(
                f"the {self.name} feature net gives no {', '.join(unknown)} features "
                f"(it gives {', '.join(self.provides)})" + self._hint(unknown)
            )
        from tqdm.auto import tqdm

        parts: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
        bar = tqdm(total=len(images), desc=f"features ({self.name})", disable=not progress, dynamic_ncols=True)
        for batch in _batches(images, batch_size):
            out = self._forward(_to_nchw(batch, self.device), outputs)
            for o in outputs:
                parts[o].append(out[o].float().cpu().numpy())
            bar.update(len(batch))
        bar.close()
        if not parts[outputs[0]]:
            raise UserError("no images given")
        return {o: np.concatenate(p) for o, p in parts.items()}

    def _hint(self, outputs: Sequence[str]) -> str:
        return ""

    def pool(self, images, **kwargs) -> np.ndarray:
        return self.features(images, ("pool",), **kwargs)["pool"]

    def spatial(self, images, **kwargs) -> np.ndarray:
        return self.features(images, ("spatial",), **kwargs)["spatial"]

    def logits(self, images, **kwargs) -> np.ndarray:
        return self.features(images, ("logits",), **kwargs)["logits"]


# -- Inception-v3, FID variant ----------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as TF), ReLU; torchvision's ``conv`` / ``bn`` names."""

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF averages over the valid pixels only; torchvision's blocks count the zero padding (pytorch-fid's patch)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):  # Mixed_5b..5d, 35x35
    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )  # (N, 224 + pool_features, 35, 35)


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, 3, stride=2),
            ],
            1,
        )  # (N, 768, 17, 17)


class InceptionC(nn.Module):  # Mixed_6b..6e, 17x17, factorised 7x7
    def __init__(self, c_in: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                self.branch7x7dbl_5(self.branch7x7dbl_4(dbl)),
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )  # (N, 768, 17, 17)


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3_2(self.branch3x3_1(x)),
                self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))),
                F.max_pool2d(x, 3, stride=2),
            ],
            1,
        )  # (N, 1280, 8, 8)


class InceptionE(nn.Module):  # Mixed_7b, 7c, 8x8, split 3x3s
    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool  # TF's mixed_10 max-pools its pool branch (pytorch-fid's FIDInceptionE_2)
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(a),
                self.branch3x3_2b(a),
                self.branch3x3dbl_3a(b),
                self.branch3x3dbl_3b(b),
                self.branch_pool(pooled),
            ],
            1,
        )  # (N, 2048, 8, 8)


class InceptionV3FID(nn.Module):
    """The trunk and 1008-way ``fc`` of the FID Inception-v3, torchvision's names; input (N, 3, 299, 299) in
    [-1, 1]. ``forward`` returns the requested outputs and stops after the last layer it needs."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor, outputs: Sequence[str] = ("pool",)) -> dict[str, torch.Tensor]:
        out = {}
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)  # (N, 64, 73, 73)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x))))))
        if "spatial" in outputs:  # TF mixed_6/conv: Mixed_6d's 1x1 branch, run again here (cheap) to keep it
            s = self.Mixed_6d.branch1x1(x)[:, :SPATIAL_CHANNELS]  # (N, 7, 17, 17)
            out["spatial"] = s.permute(0, 2, 3, 1).flatten(1)  # (N, 2023) in TF's NHWC order
        if "pool" in outputs or "logits" in outputs:
            x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(self.Mixed_6e(self.Mixed_6d(x)))))  # (N, 2048, 8, 8)
            pool = x.mean((2, 3))  # (N, 2048): pool_3
            out["pool"] = pool
            out["logits"] = pool @ self.fc.weight.T  # (N, 1008), no bias (module docstring)
        return out


def resize_tf1(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """TF 1.x ``ResizeBilinear`` (align_corners=False, no half-pixel centres) of (N, C, H, W) to size x size:
    output index i reads input coordinate ``i * in / size``, the upper neighbour clamped to the last pixel."""

    def along(x: torch.Tensor, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        src = torch.arange(size, dtype=torch.float64) * (n / size)
        lo = src.floor().long().clamp(max=n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        w = (src - lo).to(x.dtype).to(x.device)
        shape = [1] * x.ndim
        shape[dim] = size
        lo_x, hi_x = x.index_select(dim, lo.to(x.device)), x.index_select(dim, hi.to(x.device))
        return lo_x + (hi_x - lo_x) * w.view(shape)

    return along(along(x, 2), 3)


class InceptionFeatures(FeatureNet):
    provides = OUTPUTS

    def __init__(self, module: InceptionV3FID, name: str = "inception", preprocess: str = "tf"):
        if preprocess not in PREPROCESS:
            raise UserError(f"unknown Inception preprocessing {preprocess!r}; valid: {', '.join(PREPROCESS)}")
        super().__init__(module, name, INCEPTION_FAMILY)
        self.preprocess = preprocess

    def _forward(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if self.preprocess == "tf":
            x = (resize_tf1(x) - 128) / 128  # (N, 3, 299, 299)
        else:
            x = F.interpolate(x / 255, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
            x = 2 * x - 1
        return self.module(x, outputs)


def load_inception_state_dict(
    module: InceptionV3FID, state_dict: Mapping[str, torch.Tensor], source: str = "the state dict"
) -> InceptionV3FID:
    """Load strictly: every key and shape of torchvision's names, nothing else. Only BN ``num_batches_tracked``
    may be absent (older files lack it and eval mode never reads it)."""
    expected = module.state_dict()
    given = dict(state_dict)
    for k in expected:
        if k.endswith("num_batches_tracked"):
            given.setdefault(k, expected[k])
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    wrong = [
        f"{k} {tuple(given[k].shape)} instead of {tuple(expected[k].shape)}"
        for k in sorted(set(given) & set(expected))
        if given[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{label}: {_names(keys)}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
            if keys
        ]
        raise UserError(
            f"{source} is not the FID Inception-v3 state dict (torchvision names, 1008 classes, as "
            f"pt_inception-2015-12-05-6726825d.pth); " + "; ".join(problems)
        )
    module.load_state_dict(given, strict=True)
    return module


def _names(keys: Sequence[str], shown: int = 5) -> str:
    return ", ".join(keys[:shown]) + (f", ... ({len(keys)} in all)" if len(keys) > shown else "")


# -- TorchScript Inception ---------------------------------------------------------------------------------------
class TorchScriptInception(FeatureNet):
    provides = ("pool", "logits")

    def __init__(self, module: torch.jit.ScriptModule, name: str = "inception-ts"):
        super().__init__(module, name, INCEPTION_FAMILY)

    def _forward(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out = {}
        if "pool" in outputs:
            out["pool"] = self.module(x, return_features=True)  # (N, 2048)
        if "logits" in outputs:  # probabilities from logits without the fc bias; their log are logits again
            out["logits"] = self.module(x, no_output_bias=True).double().log()  # (N, 1008)
        return out

    def _hint(self, outputs: Sequence[str]) -> str:
        return (
            "; sFID needs the spatial features of inception:PATH (pt_inception-2015-12-05-6726825d.pth)"
            if "spatial" in outputs
            else ""
        )


def _is_torchscript(path: Path) -> bool:
    """torch.jit.save writes a zip with a ``code/`` folder; torch.save's zip has none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.split("/", 1)[-1].startswith("code/") for name in z.namelist())


# -- digits -----------------------------------------------------------------------------------------------------
class DigitsFeatures(FeatureNet):
    provides = ("pool", "logits")

    def _forward(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        from .digits import as_digit_batch

        x = x.mean(1, keepdim=True) if x.shape[1] == 3 else x  # RGB-saved grey digits back to one channel
        f = self.module.features(as_digit_batch(x / 127.5 - 1))  # (N, 64)
        return {"pool": f, "logits": self.module.classify(f)}  # logits (N, 10)


# -- the resolver -----------------------------------------------------------------------------------------------
def load_feature_net(spec: str, *, device: str | torch.device = "cpu", preprocess: str = "tf") -> FeatureNet:
    """``digits``, ``digits:PATH``, ``inception:PATH``, ``inception-ts:PATH`` or a bare PATH (module docstring);
    ``preprocess`` is the Inception input convention (``tf`` or ``pytorch-fid``)."""
    kind, _, arg = spec.partition(":")
    if kind not in ("digits", "inception", "inception-ts") or (kind != "digits" and not arg):
        if not (Path(spec).suffix in (".pt", ".pth") or Path(spec).exists()):
            raise UserError(f"unknown feature net {spec!r}; valid: {SPECS}")
        kind, arg = "path", spec
    if kind == "digits":
        from ..assets import DIGITS_EVALUATOR, asset_path
        from .digits import DigitsEvaluator

        path = Path(arg) if arg else asset_path(DIGITS_EVALUATOR)
        if not path.is_file():
            raise UserError(f"digits evaluator not found: {path}")
        net: FeatureNet = DigitsFeatures(DigitsEvaluator.load(path).net, f"digits@{_digest(path)}", "digits")
        return net.to(device)
    path = Path(arg)
    if not path.is_file():
        raise UserError(f"feature net weights not found: {path}")
    if kind == "path":
        kind = "inception-ts" if _is_torchscript(path) else "inception"
    if kind == "inception-ts":
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # the loader raises RuntimeError, ValueError, ... on foreign files
            raise UserError(f"{path} is not a TorchScript file: {_first_line(err)}") from None
        return TorchScriptInception(module, f"inception-ts@{_digest(path)}").to(device)
    if _is_torchscript(path):
        raise UserError(f"{path} is a TorchScript file: use inception-ts:{path}")
    state_dict = read_torch_file(path)  # a damaged or foreign file is one line naming it
    if not isinstance(state_dict, Mapping):
        raise UserError(f"{path} holds a {type(state_dict).__name__}, not a state dict")
    module = load_inception_state_dict(InceptionV3FID(), state_dict, str(path))
    return InceptionFeatures(module, f"inception[{preprocess}]@{_digest(path)}", preprocess).to(device)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _digest(path: Path, chars: int = 8) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:chars]
