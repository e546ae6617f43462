"""Latent decoders. The SD VAE is diffusers' ``AutoencoderKL`` loaded from a local folder; nothing is
downloaded. Latents are divided by the VAE's ``scaling_factor`` (0.18215 for sd-vae-ft-ema/mse) first."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import UserError


class VAEDecoder:
    """Wraps an ``AutoencoderKL``: ``decode(latents)`` -> images in [-1, 1], on the CPU."""

    def __init__(self, vae, device: str | torch.device = "cpu"):
        self.vae = vae.to(device).eval()
        self.device = torch.device(device)
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.latent_channels = int(vae.config.latent_channels)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        batch_size = batch_size or len(latents)
        dtype = next(self.vae.parameters()).dtype
        parts = []
        for chunk in latents.split(batch_size):
            z = (chunk / self.scaling_factor).to(self.device, dtype)
            parts.append(self.vae.decode(z).sample.float().cpu())
        return torch.cat(parts)


def load_vae(path: str | os.PathLike, device: str | torch.device = "cpu") -> VAEDecoder:
    """An ``AutoencoderKL`` from a local diffusers folder (``config.json`` + weights), e.g. a copy of
    ``stabilityai/sd-vae-ft-ema``; a pipeline folder with a ``vae/`` subfolder also works."""
    path = Path(path)
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise UserError(f"no VAE at {path}: expected a diffusers AutoencoderKL folder with config.json")
    from .convert.files import check_json_files, check_weight_files

    # a malformed config.json or a truncated weight file is named here; diffusers' errors do not say which
    check_json_files(path, depth=0)
    check_weight_files(path)
    try:
        from diffusers import AutoencoderKL
    except ImportError as err:
        raise UserError("decoding latents needs diffusers: pip install 'skipdit[diffusers]'") from err
    try:
        vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # diffusers raises several types for broken folders
        raise UserError(f"cannot load the VAE in {path}: {_first_line(err)}") from None
    return VAEDecoder(vae, device)


def _first_line(err: BaseException) -> str:
    """The first line of a library's message: diffusers' can run to a paragraph."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
