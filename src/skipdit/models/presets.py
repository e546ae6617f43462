"""Model presets as plain data, keyed by the paper's names ("DiT-XL/2-skip", "Latte-XL/2-skip", ...).

Each ``-skip`` preset is its vanilla preset with ``long_skip=True``; nothing else differs. The config
type decides the architecture (:data:`ARCHS`): ``DiTConfig`` -> DiT, ``LatteConfig`` -> Latte,
``LatteT2VConfig`` -> Latte-T2V.
"""

from __future__ import annotations

from ..errors import UserError
from ..registry import Registry
from .config import ModelConfig
from .dit import DiT, DiTConfig
from .latte import Latte, LatteConfig
from .latte_t2v import LatteT2V, LatteT2VConfig

# arch name (stored in our safetensors) -> (config class, model class)
ARCHS = {"dit": (DiTConfig, DiT), "latte": (LatteConfig, Latte), "latte_t2v": (LatteT2VConfig, LatteT2V)}

# (hidden_size, depth, num_heads) of the DiT sizes (DiT paper, Table 1); Latte uses the same sizes.
DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}

PRESETS: Registry[ModelConfig] = Registry("model preset")


def _register(name: str, config: ModelConfig) -> None:
    PRESETS.register(name, config)
    PRESETS.register(f"{name}-skip", config.replace(long_skip=True))


for _size, (_hidden, _depth, _heads) in DIT_SIZES.items():
    for _patch in (2, 4, 8):
        _register(f"DiT-{_size}/{_patch}", DiTConfig(hidden_size=_hidden, depth=_depth, num_heads=_heads,
                                                     patch_size=_patch))
        _register(f"Latte-{_size}/{_patch}", LatteConfig(hidden_size=_hidden, depth=_depth, num_heads=_heads,
                                                         patch_size=_patch))

# The official class-to-video configs (reference §A.3): 256x256 (latent 32), 16 frames; FaceForensics,
# SkyTimelapse and Taichi-HD are unconditional (extras=1), UCF101 has 101 classes (extras=2).
_LATTE_XL = PRESETS.get("Latte-XL/2")
for _dataset in ("FFS", "Sky", "Taichi"):
    _register(f"Latte-XL/2-{_dataset}", _LATTE_XL)
_register("Latte-XL/2-UCF101", _LATTE_XL.replace(num_classes=101))

# Latte-0 / Latte-1 text-to-video (reference §A.4): 512x512 (latent 64), 16 frames, T5-XXL captions.
_register("Latte-T2V", LatteT2VConfig())


def preset_config(name: str, **overrides) -> ModelConfig:
    return PRESETS.get(name).replace(**overrides)


def build_model(preset: str, **overrides):
    """Build a model from a preset name, with config fields overridden, e.g.
    ``build_model("DiT-XL/2-skip", input_size=64)``. Weights get the official initialisation."""
    return model_from_config(preset_config(preset, **overrides))


def arch_of(config: ModelConfig) -> str:
    for name, (config_cls, _) in ARCHS.items():
        if isinstance(config, config_cls):
            return name
    raise TypeError(f"not a model config: {type(config).__name__}")


def model_from_config(config: ModelConfig):
    return ARCHS[arch_of(config)][1](config)


def config_from_dict(arch: str, fields: dict) -> ModelConfig:
    """A config from its stored form (our safetensors metadata, training checkpoints)."""
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    return ARCHS[arch][0](**fields)
