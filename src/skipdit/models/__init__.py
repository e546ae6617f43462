from .dit import DiT, DiTConfig
from .presets import PRESETS, build_model, preset_config

__all__ = ["DiT", "DiTConfig", "PRESETS", "build_model", "preset_config"]
