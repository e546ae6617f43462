"""Precision, recall, density and coverage of samples against real images, from k-NN balls in feature space.

Each feature vector x gets a ball whose radius r_k(x) is the distance to its k-th nearest neighbour in its own set
(the vector itself counted as the 0th, as the ADM evaluator and ``prdc`` do; k = 3 by default). With real features
X (N of them) and sample features Y (M):

* precision = share of samples inside some real ball            (Kynkäänniemi et al. 2019, improved P & R)
* recall    = share of reals inside some sample ball
* density   = (1 / kM) sum_j #{i : Y_j inside the ball of X_i}  (Naeem et al. 2020)
* coverage  = share of reals whose ball holds some sample

"Inside" is ``distance <= radius``, as the ADM evaluator compares (the ``prdc`` package uses ``<`` for density
and coverage; the two differ only on exact ties). Distances are Euclidean, computed as squared distances
|a|^2 - 2 a.b + |b|^2 in float32 (the ADM evaluator tries float16 first), in ``block_size`` x ``block_size`` tiles,
so a 50k x 50k distance matrix never exists; on a GPU pass ``device="cuda"``.

The ADM evaluator reports precision and recall of Inception pool features with the reference batch as the reals.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import UserError
from .features import FeatureNet, open_images

DEFAULT_K = 3
BLOCK_SIZE = 10_000  # the ADM evaluator's row and column batch


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n, m) between rows of a (n, D) and b (m, D)."""
    return (a.square().sum(1, keepdim=True) - 2 * a @ b.T + b.square().sum(1)).clamp_min_(0)


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _as_features(x, device, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device, torch.float32)
    if t.ndim != 2 or len(t) == 0:
        raise UserError(f"{what} features must be (N, D) with N >= 1, got shape {tuple(t.shape)}")
    return t


def _sq_radii(x: torch.Tensor, k: int, block_size: int) -> torch.Tensor:
    """Squared k-NN radius of every row of x (N, D), keeping only the k + 1 smallest distances per row."""
    if len(x) <= k:
        raise UserError(f"k = {k} nearest neighbours need more than {k} feature vectors, got {len(x)}")
    radii = torch.empty(len(x), device=x.device)
    for rows in _blocks(len(x), block_size):
        best = None  # (b, k + 1): the smallest distances seen so far, the row's own 0 among them
        for cols in _blocks(len(x), block_size):
            d = _sq_dists(x[rows], x[cols])
            d = d if best is None else torch.cat([best, d], 1)
            best = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values  # sorted ascending
        radii[rows] = best[:, k]
    return radii


def manifold_radii(features, k: int = DEFAULT_K, *, block_size: int = BLOCK_SIZE, device=None) -> np.ndarray:
    """r_k of every feature vector (N, D): the distance to its k-th nearest neighbour in the same set."""
    x = _as_features(features, device or "cpu", "the")
    return _sq_radii(x, k, block_size).sqrt().cpu().numpy()


def prdc(real, fake, k: int = DEFAULT_K, *, block_size: int = BLOCK_SIZE, device=None) -> dict[str, float]:
    """Precision, recall, density and coverage (module doc) of ``fake`` (M, D) against ``real`` (N, D)."""
    if k < 1 or block_size < 1:
        raise UserError(f"k and block_size must be >= 1, got {k} and {block_size}")
    device = device or "cpu"
    r, f = _as_features(real, device, "real"), _as_features(fake, device, "sample")
    if r.shape[1] != f.shape[1]:
        raise UserError(f"real features have {r.shape[1]} dims, sample features {f.shape[1]}")
    r_rad, f_rad = _sq_radii(r, k, block_size), _sq_radii(f, k, block_size)
    fake_in = torch.zeros(len(f), dtype=torch.bool, device=r.device)  # inside some real ball: precision
    real_in = torch.zeros(len(r), dtype=torch.bool, device=r.device)  # inside some sample ball: recall
    real_hit = torch.zeros(len(r), dtype=torch.bool, device=r.device)  # real ball holds a sample: coverage
    balls = torch.zeros((), dtype=torch.float64, device=r.device)  # (sample, real ball) pairs: density
    for rows in _blocks(len(f), block_size):
        for cols in _blocks(len(r), block_size):
            d = _sq_dists(f[rows], r[cols])  # (b_f, b_r)
            in_real = d <= r_rad[cols]  # sample j inside the ball of real i
            fake_in[rows] |= in_real.any(1)
            real_hit[cols] |= in_real.any(0)
            balls += in_real.sum()
            real_in[cols] |= (d <= f_rad[rows, None]).any(0)
    return {
        "precision": fake_in.double().mean().item(),
        "recall": real_in.double().mean().item(),
        "density": balls.item() / (k * len(f)),
        "coverage": real_hit.double().mean().item(),
    }


def pool_features(
    path: str | os.PathLike, net: FeatureNet, *, from_images: bool = False, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Pool features of a path: stored ones (a stats ``.npz`` saved with its features) unless ``from_images``,
    else computed from its images (a folder, an images ``.npz``, an ADM reference batch's ``arr_0``)."""
    from .fid import check_same_net, read_stats

    stored = None if from_images else read_stats(path)
    if stored is not None and stored.pool is not None:
        check_same_net(stored, net, path)
        return stored.pool
    try:
        images = open_images(path)
    except ValueError:
        if stored is None:
            raise
        raise UserError(
            f"{path} stores statistics but no features, which precision / recall need: save the "
            "reference with --keep-features, or pass its images"
        ) from None
    return net.pool(images, batch_size=batch_size, progress=progress)


def evaluate_prdc(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    net: FeatureNet,
    *,
    k: int = DEFAULT_K,
    batch_size: int = 64,
    save_ref_stats: str | os.PathLike | None = None,
    from_images: bool = False,
    block_size: int = BLOCK_SIZE,
    progress: bool = False,
) -> dict:
    """Precision, recall, density and coverage of ``samples`` against ``reference`` (folders, images ``.npz``, or
    stats ``.npz`` saved with their features). ``save_ref_stats`` writes the reference statistics with its
    features, usable for FID too."""
    from .fid import check_inputs

    check_inputs(samples, reference, from_images=from_images)
    ref = pool_features(reference, net, from_images=from_images, batch_size=batch_size, progress=progress)
    ours = pool_features(samples, net, from_images=from_images, batch_size=batch_size, progress=progress)
    if save_ref_stats is not None:
        from .fid import FeatureStats, feature_statistics

        FeatureStats(*feature_statistics(ref), net.name, pool=ref, count=len(ref)).save(save_ref_stats)
    scores = prdc(ref, ours, k, block_size=block_size, device=net.device)
    return {**scores, "k": k, "samples": len(ours), "reference": len(ref), "feature_net": net.name}
