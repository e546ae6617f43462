import pytest
import torch

from skipdit import build_model
from skipdit.models.random import randomize_

# A DiT-S-width model (so the head count is inferable from shapes) that is small enough for CPU tests.
TINY = dict(input_size=8, depth=4, num_classes=10, in_channels=3)


def tiny_model(long_skip: bool = True, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    preset = "DiT-S/2-skip" if long_skip else "DiT-S/2"
    return randomize_(build_model(preset, **{**TINY, **overrides}), seed=seed).eval()


@pytest.fixture
def skip_model():
    return tiny_model(long_skip=True)


@pytest.fixture
def vanilla_model():
    return tiny_model(long_skip=False)
