from .fidelity import psnr

__all__ = ["psnr"]
