import os
import random

import numpy as np
import pytest
import torch

from skipdit import build_model
from skipdit.models.random import randomize_

# Every test starts from the same global random state, whatever ran before it or in which order, so a test
# never depends on the unseeded global RNG. SKIPDIT_TEST_SEED varies it: the suite must pass for any value
# (a test that passes for one seed only is asserting on noise).
TEST_SEED = int(os.environ.get("SKIPDIT_TEST_SEED", "0"))


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    torch.manual_seed(TEST_SEED)


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
