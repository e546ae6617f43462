from .dit import DiT, DiTConfig
from .latte import Latte, LatteConfig
from .latte_t2v import LatteT2V, LatteT2VConfig
from .presets import ARCHS, PRESETS, arch_of, build_model, config_from_dict, model_from_config, preset_config

__all__ = [
    "ARCHS", "DiT", "DiTConfig", "Latte", "LatteConfig", "LatteT2V", "LatteT2VConfig", "PRESETS", "arch_of",
    "build_model", "config_from_dict", "model_from_config", "preset_config",
]
