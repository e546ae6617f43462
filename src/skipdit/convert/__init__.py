"""Checkpoint formats: official DiT / Skip-DiT ``.pt``, diffusers DiT, and our safetensors."""

from .checkpoint import (
    IGNORED_KEYS,
    LoadReport,
    convert,
    detect_format,
    infer_config,
    load,
    load_state_into,
    read_checkpoint,
    save,
)

__all__ = ["IGNORED_KEYS", "LoadReport", "convert", "detect_format", "infer_config", "load", "load_state_into",
           "read_checkpoint", "save"]
