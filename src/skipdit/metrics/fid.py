"""FID, sFID and the Inception Score.

The Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

FID takes the 2048-d Inception pool features; sFID (Nash et al. 2021) the first 7 channels of Inception's
``mixed_6/conv`` map, 17x17x7 = 2023 dims (``features.py`` says which layer that is); ``skipdit.metrics.digits``
takes the digits classifier's features ("FDD").

The Inception Score (Salimans et al. 2016) over ``splits`` equal consecutive parts of the samples:

    IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = the mean of p(y|x) over the part

reported as the mean and (population) standard deviation over the parts; 10 parts, as the ADM evaluator (parts of
5,000 of 50k samples) and StyleGAN do. p(y|x) is the softmax of the feature net's logits (for Inception, the
1008-way fc without its bias, as both of them compute it).

Statistics are kept as :class:`FeatureStats` and saved as ``.npz`` with the keys of the ADM reference batches
(``mu``, ``sigma``, ``mu_s``, ``sigma_s``), plus ``feature_net`` (the network's name), ``count`` and, on request,
the raw ``pool`` features for precision / recall. An ADM reference batch (``VIRTUAL_imagenet256_labeled.npz``:
``arr_0`` images and ``mu`` / ``sigma`` / ``mu_s`` / ``sigma_s`` from TF Inception) is read as the evaluator
reads it: its stored statistics are used. Its statistics carry no name; they are accepted by the Inception
feature nets only. Statistics of differently named nets are never compared.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import is_npz_with, load_npz
from .features import INCEPTION_FAMILY, FeatureNet, ImageSource, open_images


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64."""
    x = np.asarray(features.double().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise UserError(f"need at least two feature vectors (N, D), got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 above. tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2), which has the same spectrum and needs no complex sqrtm."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise UserError(
            f"mismatched statistics: means {mu1.shape}, {mu2.shape}; covariances {sigma1.shape}, {sigma2.shape}"
        )
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


# -- statistics -------------------------------------------------------------------------------------------------
@dataclass
class FeatureStats:
    """Mean and covariance of one image set's pool features (and of its spatial features, for sFID)."""

    mu: np.ndarray
    sigma: np.ndarray
    feature_net: str | None = None  # None: an ADM reference batch (TF Inception-v3, no name stored)
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    pool: np.ndarray | None = field(default=None, repr=False)  # (N, D) features, for precision / recall
    count: int | None = None

    def save(self, path: str | os.PathLike) -> Path:
        from ..io import atomic_write

        path = Path(path)
        if path.suffix != ".npz":
            raise UserError(f"statistics are saved as .npz, not {path.name}")
        keys = ("mu", "sigma", "mu_s", "sigma_s", "pool", "feature_net", "count")
        arrays = {k: np.asarray(getattr(self, k)) for k in keys if getattr(self, k) is not None}
        return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def read_stats(path: str | os.PathLike) -> FeatureStats | None:
    """The statistics stored in an ``.npz`` (ours or an ADM reference batch), or None if it stores none."""
    path = Path(path)
    if not is_npz_with(path, ("mu",)):  # images, an ADM batch without statistics, or not an .npz
        return None
    get = load_npz(path, ("mu", "sigma", "mu_s", "sigma_s", "pool", "feature_net", "count"))
    if "sigma" not in get:
        raise UserError(f"{path} has mu but no sigma")
    return FeatureStats(
        get["mu"],
        get["sigma"],
        str(get["feature_net"]) if "feature_net" in get else None,
        get.get("mu_s"),
        get.get("sigma_s"),
        get.get("pool"),
        int(get["count"]) if "count" in get else None,
    )


def check_same_net(stats: FeatureStats, net: FeatureNet, where: str | os.PathLike) -> None:
    if stats.feature_net is None:
        if net.family != INCEPTION_FAMILY:
            raise UserError(
                f"{where} holds statistics without a feature-net name, as ADM reference batches do "
                f"(TF Inception-v3 features): compare them with an Inception feature net, not {net.name}"
            )
    elif stats.feature_net != net.name:
        raise UserError(
            f"{where} holds statistics of the feature net {stats.feature_net}, not of {net.name}: "
            "recompute them with the same --features"
        )


def compute_stats(
    images: ImageSource | np.ndarray | torch.Tensor,
    net: FeatureNet,
    *,
    spatial: bool = False,
    keep_pool: bool = False,
    batch_size: int = 64,
    progress: bool = False,
) -> FeatureStats:
    """Statistics of images (one pass of ``net``): pool moments, spatial moments with ``spatial``, and the pool
    features themselves with ``keep_pool``."""
    feats = net.features(
        images, ("pool", "spatial") if spatial else ("pool",), batch_size=batch_size, progress=progress
    )
    mu, sigma = feature_statistics(feats["pool"])
    mu_s, sigma_s = feature_statistics(feats["spatial"]) if spatial else (None, None)
    return FeatureStats(mu, sigma, net.name, mu_s, sigma_s, feats["pool"] if keep_pool else None, len(feats["pool"]))


def check_inputs(*paths: str | os.PathLike, from_images: bool = False) -> None:
    """Open every input (stored statistics, or images: a folder, an ``.npz``) so that a missing, empty or damaged
    one is refused before minutes of feature extraction on the others."""
    for path in paths:
        if from_images or read_stats(path) is None:
            open_images(path)


def load_or_compute_stats(
    path: str | os.PathLike,
    net: FeatureNet,
    *,
    spatial: bool = False,
    keep_pool: bool = False,
    from_images: bool = False,
    batch_size: int = 64,
    progress: bool = False,
) -> FeatureStats:
    """The statistics of ``path``: stored ones (a stats ``.npz`` or an ADM reference batch) unless
    ``from_images``, else computed from its images (a folder or an ``.npz`` with ``arr_0``)."""
    stored = None if from_images else read_stats(path)
    if stored is None:
        return compute_stats(
            open_images(path), net, spatial=spatial, keep_pool=keep_pool, batch_size=batch_size, progress=progress
        )
    check_same_net(stored, net, path)
    if spatial and (stored.mu_s is None or stored.sigma_s is None):
        raise UserError(
            f"{path} stores no spatial statistics (mu_s, sigma_s), which sFID needs; recompute them with --sfid"
        )
    if keep_pool and stored.pool is None:
        if stored.feature_net is None:  # TF moments with our features in one file would mix two networks
            raise UserError(
                f"{path} stores ADM statistics without features; to save features with statistics of "
                f"the same network, compute both from its images with --from-images"
            )
        stored.pool = net.pool(open_images(path), batch_size=batch_size, progress=progress)
    return stored


def evaluate_fid(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    net: FeatureNet,
    *,
    sfid: bool = False,
    batch_size: int = 64,
    save_ref_stats: str | os.PathLike | None = None,
    keep_features: bool = False,
    from_images: bool = False,
    progress: bool = False,
) -> dict:
    """FID (and sFID) of ``samples`` against ``reference``: each a folder of images, an images ``.npz``, a stats
    ``.npz`` or an ADM reference batch. ``save_ref_stats`` writes the reference statistics (with the pool
    features too when ``keep_features``) for later runs."""
    check_inputs(samples, reference, from_images=from_images)
    # the reference first: a stored one that does not fit fails before the long pass over the samples
    ref = load_or_compute_stats(
        reference,
        net,
        spatial=sfid,
        keep_pool=keep_features and save_ref_stats is not None,
        from_images=from_images,
        batch_size=batch_size,
        progress=progress,
    )
    ours = load_or_compute_stats(
        samples, net, spatial=sfid, from_images=from_images, batch_size=batch_size, progress=progress
    )
    if save_ref_stats is not None:
        ref.save(save_ref_stats)
    result = {"fid": frechet_distance(ours.mu, ours.sigma, ref.mu, ref.sigma)}
    if sfid:
        result["sfid"] = frechet_distance(ours.mu_s, ours.sigma_s, ref.mu_s, ref.sigma_s)
    return {**result, "samples": ours.count, "reference": ref.count, "feature_net": net.name}


# -- Inception Score --------------------------------------------------------------------------------------------
def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation of the IS over ``splits`` consecutive parts of logits (N, K) (module doc)."""
    x = torch.as_tensor(logits).double()
    if x.ndim != 2 or len(x) < 1:
        raise UserError(f"need logits (N, K), got shape {tuple(x.shape)}")
    if not 1 <= splits <= len(x):
        raise UserError(f"splits must be in [1, {len(x)}] for {len(x)} samples, got {splits}")
    p = torch.softmax(x, dim=1)  # p(y|x); a logit of -inf is a probability of exactly 0
    scores = []
    for i in range(splits):
        part = p[i * len(p) // splits : (i + 1) * len(p) // splits]
        marginal = part.mean(0, keepdim=True)  # p(y)
        # x log x with 0 log 0 = 0, so classes a sample never predicts add nothing (no NaN)
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def evaluate_is(
    samples: str | os.PathLike | ImageSource | np.ndarray | torch.Tensor,
    net: FeatureNet,
    *,
    splits: int = 10,
    batch_size: int = 64,
    progress: bool = False,
) -> dict:
    """The Inception Score of images (a path as :func:`open_images` reads, or arrays) under ``net``'s logits."""
    images = open_images(samples) if isinstance(samples, (str, os.PathLike)) else samples
    logits = net.logits(images, batch_size=batch_size, progress=progress)
    mean, std = inception_score(logits, splits)
    return {"is": mean, "is_std": std, "splits": splits, "samples": len(logits), "feature_net": net.name}
