"""What the model configs share: validation of the common fields, ``out_channels`` and ``replace``.

Each family's config (``DiTConfig``, ``LatteConfig``, ``LatteT2VConfig``) is a frozen dataclass that
inherits from :class:`ModelConfig` and calls :meth:`ModelConfig.check` from ``__post_init__``.
"""

from __future__ import annotations

import dataclasses

from ..errors import UserError
from .skip import SKIP_INITS

COMMON_POSITIVE = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads")


class ModelConfig:
    """The base of every family's config; ``ModelConfig`` in an annotation means any of them."""

    family = "model"  # for messages: "unknown DiT config field(s) ..."

    def check(self, positive: tuple[str, ...] = (), dropout: str | None = None) -> None:
        """Raise ``ValueError`` naming the field for every invalid common value."""
        for name in COMMON_POSITIVE + positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.input_size % self.patch_size:
            raise UserError(f"input size {self.input_size} is not divisible by the patch size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise UserError(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")
        if self.hidden_size % 4:
            raise UserError(f"hidden size must be divisible by 4 (2-D sin-cos), got {self.hidden_size}")
        if self.skip_init not in SKIP_INITS:
            raise UserError(f"unknown skip_init {self.skip_init!r}; valid: {', '.join(SKIP_INITS)}")
        if dropout is not None and not 0.0 <= getattr(self, dropout) < 1.0:
            raise UserError(f"{dropout} must be in [0, 1), got {getattr(self, dropout)}")

    @property
    def out_channels(self) -> int:
        """Noise prediction, plus as many variance channels with learned sigma."""
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def replace(self, **changes):
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise UserError(f"unknown {self.family} config field(s) {unknown}; valid: {', '.join(sorted(valid))}")
        return dataclasses.replace(self, **changes)
