"""Built-in weights shipped in the package (model cards: ``docs/model-zoo.md``).

``skipdit.load("digits/Skip-DiT")`` and ``skipdit sample`` with no ``--ckpt`` use them.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

HERE = Path(__file__).parent

BUILTIN_MODELS = {
    "digits/Skip-DiT": "digits-skip-dit.safetensors",  # configs/digits/skip-dit.yaml
    "digits/DiT": "digits-dit.safetensors",  # configs/digits/dit.yaml: the same without long skips
    "digits-deep/Skip-DiT": "digits-deep-skip-dit.safetensors",  # configs/digits-deep/skip-dit.yaml: depth 28, bf16
    "digits-deep/DiT": "digits-deep-dit.safetensors",  # configs/digits-deep/dit.yaml: the same without long skips
    "digits/T2I-Skip-DiT": "digits-t2i-skip.safetensors",  # configs/digits/t2i-skip.yaml: text-to-image
    "moving-digits/Latte-skip": "moving-digits-latte-skip.safetensors",  # configs/moving-digits/latte-skip.yaml
    "moving-digits/Latte-T2V-skip": "moving-digits-latte-t2v-skip.safetensors",  # .../latte-t2v-skip.yaml
}
DEFAULT_MODEL = "digits/Skip-DiT"
# the built-in model `skipdit sample --task T` uses when no --ckpt is given
TASK_DEFAULTS = {"c2i": "digits/Skip-DiT", "c2v": "moving-digits/Latte-skip", "t2v": "moving-digits/Latte-T2V-skip",
                 "t2i": "digits/T2I-Skip-DiT"}
DIGITS_EVALUATOR = "digits-evaluator.safetensors"  # python -m skipdit.metrics.digits


def asset_path(filename: str) -> Path:
    path = HERE / filename
    if not path.is_file():
        raise UserError(f"built-in asset {filename} is missing from {HERE}; reinstall skipdit")
    return path


def builtin_model_path(name: str) -> Path:
    if name not in BUILTIN_MODELS:
        raise UserError(f"unknown built-in model {name!r}; valid: {', '.join(BUILTIN_MODELS)}")
    return asset_path(BUILTIN_MODELS[name])


def resolve_weights(path_or_name) -> Path:
    """A built-in model name (``"digits/Skip-DiT"``) as its file; anything else as a path."""
    return builtin_model_path(str(path_or_name)) if str(path_or_name) in BUILTIN_MODELS else Path(path_or_name)
