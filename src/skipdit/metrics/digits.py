"""The digits evaluator: a small CNN trained on the real 16x16 digits, shipped with the package.

It scores generated digits two ways:

* **accuracy**: the share of samples the classifier assigns to the class they were generated for;
* **FDD**: the Fréchet distance between Gaussians fitted to its penultimate features of the samples and
  of all 1,797 real digits (the small-scale stand-in for FID; the real statistics ship with the weights).

    ev = DigitsEvaluator.load()                 # the built-in one
    scores = ev.evaluate(images, labels)        # {"accuracy": ..., "fdd": ...}

Build the shipped file with ``python -m skipdit.metrics.digits --out PATH`` (needs scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import load_digits_tensors, shift_by_one
from ..errors import UserError
from .fid import feature_statistics, frechet_distance

FEATURE_DIM = 64


class DigitsNet(nn.Module):
    """Two conv stages (16 -> 8 -> 4) and a 64-d feature layer."""

    def __init__(self, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 32, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
        )
        self.feature = nn.Linear(64 * 4 * 4, feature_dim)
        self.classify = nn.Linear(feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.feature(self.convs(x).flatten(1)))  # (N, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))  # (N, 10)


class DigitsEvaluator:
    def __init__(self, net: DigitsNet, ref_mu: torch.Tensor, ref_sigma: torch.Tensor, info: dict | None = None):
        self.net = net.eval()
        self.ref_mu, self.ref_sigma = ref_mu.double().numpy(), ref_sigma.double().numpy()
        self.info = info or {}

    # -- scoring --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        x = as_digit_batch(images)
        return torch.cat([self.net.features(chunk) for chunk in x.split(batch_size)])

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.classify(self.features(images)).argmax(dim=1)

    def evaluate(self, images: torch.Tensor, labels) -> dict[str, float]:
        feats = self.features(images)
        labels = torch.as_tensor(labels).long()
        with torch.no_grad():
            accuracy = (self.net.classify(feats).argmax(dim=1) == labels).float().mean().item()
        return {"accuracy": accuracy, "fdd": frechet_distance(*feature_statistics(feats), self.ref_mu, self.ref_sigma)}

    # -- files ----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> DigitsEvaluator:
        """The built-in evaluator, or one written by :meth:`save`."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        from ..assets import DIGITS_EVALUATOR, asset_path

        path = asset_path(DIGITS_EVALUATOR) if path is None else Path(path)
        if not Path(path).is_file():
            raise UserError(f"digits evaluator not found: {path}")
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("info", "{}"))
        net = DigitsNet(int(info.get("feature_dim", FEATURE_DIM)))
        net.load_state_dict({k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")})
        return cls(net, tensors["ref_mu"], tensors["ref_sigma"], info)

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.contiguous() for k, v in self.net.state_dict().items()}
        tensors.update(ref_mu=torch.from_numpy(self.ref_mu).float(), ref_sigma=torch.from_numpy(self.ref_sigma).float())
        save_file(tensors, str(path), metadata={"info": json.dumps(self.info)})
        return path


def as_digit_batch(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 16, 16) float in [-1, 1] from either that or uint8 (N, 16, 16, 1) images."""
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if images.ndim != 4 or images.shape[1:] != (1, 16, 16):
        raise UserError(f"the digits evaluator takes 1x16x16 images, got shape {tuple(images.shape)}")
    return images.float()


def train_evaluator(seed: int = 0, epochs: int = 40, holdout: float = 0.2) -> DigitsEvaluator:
    """Train on a seeded 80 % of the real digits (with the training loop's one-pixel shifts), report the
    accuracy on the other 20 %, and take the reference statistics from all of them."""
    images, labels = load_digits_tensors()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen)
    n_test = int(len(images) * holdout)
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    net = DigitsNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * ((len(train) + 63) // 64))
    for _ in range(epochs):
        net.train()
        for batch in train[torch.randperm(len(train), generator=gen)].split(64):
            x = shift_by_one(images[batch], torch.rand(len(batch), 2, generator=gen), None)
            loss = F.cross_entropy(net(x), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(images[test]).argmax(1) == labels[test]).float().mean().item()
        mu, sigma = feature_statistics(net.features(images))
        # the floor of FDD: held-out real digits against all real digits
        floor = frechet_distance(*feature_statistics(net.features(images[test])), mu, sigma)
    info = {"feature_dim": FEATURE_DIM, "seed": seed, "epochs": epochs, "holdout_accuracy": accuracy,
            "holdout_size": n_test, "fdd_real_holdout": floor}
    return DigitsEvaluator(net, torch.from_numpy(mu), torch.from_numpy(sigma), info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train the digits evaluator and write it as safetensors")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    evaluator = train_evaluator(args.seed, args.epochs)
    evaluator.save(args.out)
    print(json.dumps(evaluator.info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
