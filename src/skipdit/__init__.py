"""skipdit: Skip-DiT models (diffusion transformers with long skip connections) and Skip-Cache.

    import skipdit
    model = skipdit.load("DiT-XL-2-skip.pt")                      # official checkpoint, unchanged
    vae = skipdit.load_vae("sd-vae-ft-ema/")                      # a local diffusers folder
    out = skipdit.generate(model, seeds=range(8), condition=207, cache="c2i:N=2", vae=vae,
                           sampling=skipdit.Sampling(steps=250, guidance_scale=4.0))
    print(out.stats.summary(), out.seconds)

    t2v = skipdit.load("moving-digits/Latte-T2V-skip")           # built-in text-to-video
    prompt = skipdit.Condition(prompts="the digit 7 moves up", text_encoder=skipdit.load_text_encoder())
    video = skipdit.generate(t2v, seeds=[0], condition=prompt, cache="t2v:N=2",
                             sampling=skipdit.Sampling(sampler="ddim", steps=50))
"""

from .cache import parse_cache
from .convert import load, save
from .models import DiT, DiTConfig, Latte, LatteConfig, LatteT2V, LatteT2VConfig, build_model
from .sampling import Condition, Generation, Runtime, Sampling, generate
from .text import load_text_encoder
from .vae import load_vae

__version__ = "0.1.0"

__all__ = [
    "Condition", "DiT", "DiTConfig", "Generation", "Latte", "LatteConfig", "LatteT2V", "LatteT2VConfig", "Runtime",
    "Sampling", "build_model", "generate", "load", "load_text_encoder", "load_vae", "parse_cache", "save",
]
