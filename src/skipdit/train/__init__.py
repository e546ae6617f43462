"""Training: from scratch or the two-stage conversion of a vanilla DiT (``stage: skip-only``, then
``stage: full``), with EMA, exact resume and DDP through torchrun."""

from .checkpoint import export, latest_checkpoint, load_run
from .config import TrainConfig, load_config
from .data import extract_latents
from .loop import train

__all__ = ["TrainConfig", "export", "extract_latents", "latest_checkpoint", "load_config", "load_run", "train"]
