"""skipdit: Skip-DiT models (diffusion transformers with long skip connections) and Skip-Cache.

    import skipdit
    model = skipdit.load("DiT-XL-2-skip.pt")                      # official checkpoint, unchanged
    vae = skipdit.load_vae("sd-vae-ft-ema/")                      # a local diffusers folder
    out = skipdit.generate(model, seeds=range(8), labels=207, cfg_scale=4.0, cache="c2i:N=2", vae=vae)
    print(out.stats.summary(), out.seconds)
"""

from .cache import parse_cache
from .convert import load, save
from .models import DiT, DiTConfig, build_model
from .sampling import Generation, generate
from .vae import load_vae

__version__ = "0.1.0"

__all__ = [
    "DiT", "DiTConfig", "Generation", "build_model", "generate", "load", "load_vae", "parse_cache", "save",
]
