"""Model presets as plain data, keyed by the paper's names ("DiT-XL/2", "DiT-XL/2-skip", ...).

Each ``-skip`` preset is its vanilla preset with ``long_skip=True``; nothing else differs.
"""

from __future__ import annotations

from ..registry import Registry
from .dit import DiT, DiTConfig

# (hidden_size, depth, num_heads) of the DiT sizes (DiT paper, Table 1).
DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}

PRESETS: Registry[DiTConfig] = Registry("model preset")
for _size, (_hidden, _depth, _heads) in DIT_SIZES.items():
    for _patch in (2, 4, 8):
        _cfg = DiTConfig(hidden_size=_hidden, depth=_depth, num_heads=_heads, patch_size=_patch)
        PRESETS.register(f"DiT-{_size}/{_patch}", _cfg)
        PRESETS.register(f"DiT-{_size}/{_patch}-skip", _cfg.replace(long_skip=True))


def preset_config(name: str, **overrides) -> DiTConfig:
    return PRESETS.get(name).replace(**overrides)


def build_model(preset: str, **overrides) -> DiT:
    """Build a model from a preset name, with config fields overridden, e.g.
    ``build_model("DiT-XL/2-skip", input_size=64)``. Weights get the official initialisation."""
    return DiT(preset_config(preset, **overrides))


def preset_name_for(config: DiTConfig) -> str | None:
    """The preset whose architecture matches ``config`` (ignoring input size and classes), if any."""
    keys = ("patch_size", "hidden_size", "depth", "num_heads", "long_skip")
    for name in PRESETS:
        cfg = PRESETS.get(name)
        if all(getattr(cfg, k) == getattr(config, k) for k in keys):
            return name
    return None
