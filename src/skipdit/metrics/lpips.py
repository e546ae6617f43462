"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", eq. 1):

    d(x0, x1) = sum_l mean_hw( w_l . (f_l(x0) - f_l(x1))^2 ),   f_l = channel-wise unit-normalised features

over five layers of an ImageNet trunk, with the linear heads w_l of the ``lpips`` package (v0.1). No torchvision
and no downloads: the trunks are written here with torchvision's parameter names, so a local torchvision
checkpoint (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) loads as it is, and the heads load from the
``lpips`` package's ``weights/v0.1/{alex,vgg}.pth``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..convert.files import read_torch_file
from ..errors import UserError
from .fidelity import over_frames

# The ``lpips`` ScalingLayer: maps inputs in [-1, 1] to roughly ImageNet-normalised ones.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # of the unit normalisation, as in ``lpips.normalize_tensor``


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features``: convs at indices 0, 3, 6, 8, 10."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),  # 0, 1
        nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),  # 2, 3, 4
        nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),  # 5, 6, 7
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),  # 8, 9
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),  # 10, 11
        nn.MaxPool2d(3, 2),  # 12
    )


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` (configuration "D", no batch norm): 13 convs, 5 max-pools."""
    layers: list[nn.Module] = []
    c_in = 3
    for c in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if c == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
            c_in = c
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class NetSpec:
    """One LPIPS trunk: how to build it, where its five layers are tapped, and which files it loads."""

    build: Callable[[], nn.Sequential]
    taps: tuple[int, ...]  # exclusive end of each slice of ``features``: each ends just after a ReLU
    channels: tuple[int, ...]
    min_size: int  # the smallest height and width that leave the last tapped layer at least 1x1
    backbone: str  # what the backbone file is, for error messages
    heads: str


NETS: dict[str, NetSpec] = {
    # relu1..relu5; 31 = 4 * 6 + 7: conv 11/4 -> 7, pool -> 3, pool -> 1.
    "alex": NetSpec(alexnet_features, (2, 5, 8, 10, 12), (64, 192, 384, 256, 256), 31,
                    "torchvision's AlexNet ImageNet weights (alexnet-owt-7be5be79.pth)",
                    "the lpips package's linear heads for AlexNet (lpips/weights/v0.1/alex.pth)"),
    # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; four 2x2 pools before relu5_3.
    "vgg": NetSpec(vgg16_features, (4, 9, 16, 23, 30), (64, 128, 256, 512, 512), 16,
                   "torchvision's VGG16 ImageNet weights (vgg16-397923af.pth)",
                   "the lpips package's linear heads for VGG16 (lpips/weights/v0.1/vgg.pth)"),
}


def _spec(net: str) -> NetSpec:
    if net not in NETS:
        raise UserError(f"unknown LPIPS net {net!r}; valid: {sorted(NETS)}")
    return NETS[net]


class Backbone(nn.Module):
    """``features`` (torchvision's parameter names) cut into slices; returns the output of each slice."""

    def __init__(self, features: nn.Sequential, taps: Sequence[int]):
        super().__init__()
        self.features = features
        self.taps = tuple(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, start = [], 0
        for end in self.taps:
            x = self.features[start:end](x)
            outs.append(x)
            start = end
        return outs


def normalize_channels(f: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Scale each feature vector (N, C, h, w) along C to unit length; an all-zero vector stays zero."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """The LPIPS distance between images (N, 3, H, W) in [-1, 1]. ``trunk`` maps the scaled input to a list of
    feature maps with ``channels`` channels each; one 1x1 linear head per map weighs the squared differences."""

    def __init__(self, trunk: nn.Module, channels: Sequence[int], min_size: int = 1, name: str = "custom"):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.min_size = min_size
        self.name = name
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def build(cls, net: str = "alex") -> LPIPS:
        """An LPIPS model with a randomly initialised trunk and heads (for tests and shapes)."""
        spec = _spec(net)
        return cls(Backbone(spec.build(), spec.taps), spec.channels, spec.min_size, net)

    @classmethod
    def load(cls, backbone_path: str | Path, heads_path: str | Path, net: str = "alex") -> LPIPS:
        """The trunk from a torchvision checkpoint (``classifier.*`` keys are ignored) and the heads from the
        ``lpips`` package's weights file; returned in eval mode, frozen, on the CPU."""
        spec = _spec(net)
        backbone_sd = _read_state_dict(backbone_path, spec.backbone)
        heads_sd = _read_state_dict(heads_path, spec.heads)
        model = cls.build(net)
        trunk_sd = {k: v for k, v in backbone_sd.items() if not k.startswith("classifier.")}
        _check_keys(trunk_sd, model.trunk.state_dict(), backbone_path, spec.backbone)
        model.trunk.load_state_dict(trunk_sd)
        # The lpips package names head l ``lin{l}.model.1`` (``model.0`` is a parameter-free dropout).
        lpips_names = {f"lin{i}.model.1.weight": f"{i}.weight" for i in range(len(spec.channels))}
        expected = {k: model.heads.state_dict()[ours] for k, ours in lpips_names.items()}
        _check_keys(heads_sd, expected, heads_path, spec.heads)
        model.heads.load_state_dict({ours: heads_sd[k] for k, ours in lpips_names.items()})
        return model.eval().requires_grad_(False)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Per-sample distance (N,) between x0 and x1 (N, 3, H, W) in [-1, 1]; 0 for identical inputs."""
        h, w = x0.shape[-2:]
        if min(h, w) < self.min_size:
            raise UserError(f"LPIPS ({self.name}) needs images of at least {self.min_size}x{self.min_size} pixels, "
                             f"got {h}x{w}; upsample them first, or use a trunk with a smaller minimum "
                             f"({', '.join(f'{k}: {s.min_size}' for k, s in NETS.items())})")
        feats0 = self.trunk((x0 - self.shift) / self.scale)
        feats1 = self.trunk((x1 - self.shift) / self.scale)
        if not len(feats0) == len(feats1) == len(self.heads):
            raise UserError(f"the trunk gave {len(feats0)} feature maps for {len(self.heads)} heads")
        total = x0.new_zeros(x0.shape[0])
        for f0, f1, head in zip(feats0, feats1, self.heads):
            diff = (normalize_channels(f0) - normalize_channels(f1)) ** 2  # (N, C_l, h_l, w_l)
            total = total + head(diff).mean(dim=(1, 2, 3))  # weighted sum over channels, mean over space
        return total


def lpips(a: torch.Tensor, b: torch.Tensor, model: LPIPS, *, batch_size: int = 64,
          data_range: float = 255.0) -> torch.Tensor:
    """Per-sample LPIPS (N,) in float64 between images (N, H, W, C) or videos (N, F, H, W, C), uint8 or float in
    [0, data_range], C in (1, 3): inputs go to [-1, 1], grey is repeated to RGB, videos are scored per frame and
    averaged over frames. ``model`` runs ``batch_size`` images at a time on its own device."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if not data_range > 0:
        raise UserError(f"data_range must be positive, got {data_range}")
    return over_frames(partial(_lpips_images, model=model, batch_size=batch_size, data_range=data_range), a, b,
                       "LPIPS")


def _lpips_images(a: torch.Tensor, b: torch.Tensor, model: LPIPS, batch_size: int, data_range: float) -> torch.Tensor:
    if a.dim() != 4 or a.shape[0] == 0 or a.shape[-1] not in (1, 3):
        raise UserError(f"LPIPS needs images (N, H, W, C) or videos (N, F, H, W, C) with C in (1, 3) and N >= 1, "
                         f"got shape {tuple(a.shape)}")
    param = next(model.parameters())
    out = []
    with torch.no_grad():
        for i in range(0, len(a), batch_size):
            x0, x1 = (_to_model_input(x[i:i + batch_size], data_range).to(param.device, param.dtype) for x in (a, b))
            out.append(model(x0, x1).double())
    return torch.cat(out).to(a.device)


def _to_model_input(x: torch.Tensor, data_range: float) -> torch.Tensor:
    """(N, H, W, C) in [0, data_range] -> (N, 3, H, W) float32 in [-1, 1]."""
    x = x.float().permute(0, 3, 1, 2) * (2 / data_range) - 1  # (N, C, H, W)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _read_state_dict(path: str | Path, what: str) -> Mapping[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: it should hold {what}")
    sd = read_torch_file(path)  # a damaged or foreign file is one line naming it
    if not isinstance(sd, Mapping):
        raise UserError(f"{path} holds a {type(sd).__name__}, not a state dict of {what}")
    return sd


def _names(keys: Sequence[str], shown: int = 6) -> str:
    head = ", ".join(keys[:shown])
    return head + (f", ... ({len(keys)} in all)" if len(keys) > shown else "")


def _check_keys(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: str | Path,
                what: str) -> None:
    """Every expected key present with its shape, and nothing else: ``strict=False`` is never used silently."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = [f"{k} {tuple(given[k].shape)} instead of {tuple(expected[k].shape)}"
             for k in sorted(set(given) & set(expected)) if given[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = [f"{label}: {_names(keys)}" for label, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)) if keys]
        raise UserError(f"{path} is not {what}; " + "; ".join(problems))
