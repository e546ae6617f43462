"""Training stages of the two-stage conversion (reference §D.1), chosen by module.

* ``full``: every trainable parameter (the fixed sin-cos tables ``pos_embed`` / ``temp_embed`` stay frozen,
  as upstream).
* ``skip-only``: only the long-skip modules (``skip_norms`` and ``skip_linears``). A vanilla DiT
  converted to Skip-DiT first learns to use its new skips while the pretrained blocks stay fixed.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .config import STAGES

FIXED_TABLES = ("pos_embed", "temp_embed")  # sin-cos tables stored as frozen Parameters (DiT, Latte)


def stage_modules(model: nn.Module, stage: str) -> list[nn.Module]:
    """The modules whose parameters train in ``stage``."""
    if stage == "full":
        return [model]
    if stage == "skip-only":
        if not model.has_long_skips:
            raise UserError("stage skip-only needs a model with long skips (a -skip preset)")
        return [model.skip_norms, model.skip_linears]
    raise UserError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")


def apply_stage(model: nn.Module, stage: str) -> list[nn.Parameter]:
    """Freeze everything outside ``stage``'s modules; return the parameters that train (for the optimizer)."""
    modules = stage_modules(model, stage)
    model.requires_grad_(False)
    for module in modules:
        module.requires_grad_(True)
    for name in FIXED_TABLES:
        if isinstance(getattr(model, name, None), nn.Parameter):
            getattr(model, name).requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]
