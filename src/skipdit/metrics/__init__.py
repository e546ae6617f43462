from .features import FeatureNet, load_feature_net, open_images
from .fid import (
    FeatureStats,
    evaluate_fid,
    evaluate_is,
    feature_statistics,
    frechet_distance,
    inception_score,
    load_or_compute_stats,
)
from .fidelity import cosine_similarity, mse, psnr, ssim
from .lpips import LPIPS, lpips
from .prdc import evaluate_prdc, manifold_radii, prdc

__all__ = [
    "LPIPS",
    "FeatureNet",
    "FeatureStats",
    "cosine_similarity",
    "evaluate_fid",
    "evaluate_is",
    "evaluate_prdc",
    "feature_statistics",
    "frechet_distance",
    "inception_score",
    "load_feature_net",
    "load_or_compute_stats",
    "lpips",
    "manifold_radii",
    "mse",
    "open_images",
    "prdc",
    "psnr",
    "ssim",
]
