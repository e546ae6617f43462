"""Skip-Cache for diffusers' ``HunyuanDiT2DModel`` (reference §A.5, §B.2).

Hunyuan-DiT has long skips of its own: with ``L`` blocks, blocks ``0 .. L/2-2`` push their outputs and
blocks ``L/2+1 .. L-1`` fuse one in (inside the block: ``skip_norm`` / ``skip_linear``), so the two
middle blocks are unpaired (19 and 20 of DiT-g/2's 40). Skip-DiT uses the weights as they are and adds
only the cache; the official schedule is the ``t2i`` preset (b=1, always full at t >= 700, reset at
t <= 50) on the pipeline's DDPM-100 timesteps.
"""

from __future__ import annotations

from .blocks import LongSkipLayout


def hunyuan_layout(transformer) -> LongSkipLayout:
    num_layers = len(transformer.blocks)
    return LongSkipLayout(num_units=num_layers, num_pairs=num_layers // 2 - 1)
