"""Random weights for demos, tests and benchmarks.

The official initialisation zeroes every adaLN modulation and the output layer, so an untrained
model outputs zeros and every cache is trivially exact on it. ``randomize_`` adds Gaussian noise to
every Linear / Conv weight and bias so that all paths, long skips included, carry signal. The noise is
seeded by ``seed``; the initialisation it is added to comes from torch's global generator, so call
``torch.manual_seed`` before building the model when weights must match across processes.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            for p in (module.weight, module.bias):
                if p is not None:
                    p.add_(torch.randn(p.shape, generator=generator).to(p) * std)
    return model
