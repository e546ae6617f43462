from .fidelity import cosine_similarity, mse, psnr, ssim
from .lpips import LPIPS, lpips

__all__ = ["LPIPS", "cosine_similarity", "lpips", "mse", "psnr", "ssim"]
