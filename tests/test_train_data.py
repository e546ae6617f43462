"""Training data: batch order, image folders, latent shards, augmentations."""

import numpy as np
import pytest
import torch
from PIL import Image

from skipdit.datasets import shift_by_one
from skipdit.train import extract_latents
from skipdit.train.config import DataConfig
from skipdit.train.data import StepBatches, build_data, center_crop

from .test_sampling import tiny_vae_folder


@pytest.mark.parametrize("size, batch", [(10, 4), (7, 8), (100, 16)])
def test_step_batches_split_the_global_batch_and_walk_epochs(size, batch):
    single = list(StepBatches(size, batch, 0, 12, seed=3))
    for world in (2, 4):
        shares = [list(StepBatches(size, batch, 0, 12, seed=3, rank=r, world=world)) for r in range(world)]
        assert [sum((s[k] for s in shares), []) for k in range(12)] == single
    stream = sum(single, [])
    for epoch in range(len(stream) // size):  # every full epoch is a permutation
        assert sorted(stream[epoch * size : (epoch + 1) * size]) == list(range(size))
    assert list(StepBatches(size, batch, 5, 12, seed=3)) == single[5:]  # resuming mid-run
    assert list(StepBatches(size, batch, 0, 12, seed=4)) != single


def test_shift_by_one_moves_pixels_by_at_most_one():
    x = -torch.ones(3, 1, 5, 5)
    x[:, :, 2, 2] = 1.0
    u = torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.99, 0.99]])  # shift +1, 0, -1 along both axes
    out = shift_by_one(x, u, None)
    assert [tuple((img[0] == 1).nonzero()[0].tolist()) for img in out] == [(3, 3), (2, 2), (1, 1)]


def test_center_crop_is_adm_style():
    image = Image.fromarray(np.arange(600 * 400 * 3, dtype=np.uint32).reshape(400, 600, 3).astype(np.uint8))
    assert center_crop(image, 64).size == (64, 64)
    assert center_crop(Image.new("RGB", (50, 30)), 64).size == (64, 64)  # upscales small images


def _image_folder(root, per_class=3, size=20):
    rng = np.random.default_rng(0)
    for name in ("ant", "bee"):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size + 6, 3), dtype=np.uint8)).save(root / name / f"{k}.png")
    return root


def test_image_folder_items_and_flip(tmp_path):
    data = build_data(DataConfig(kind="image-folder", path=str(_image_folder(tmp_path / "img")), image_size=16))
    assert len(data.dataset) == 6 and data.num_classes == 2 and data.sample_shape == (3, 16, 16)
    x, y = data.dataset[4]
    assert x.shape == (3, 16, 16) and y == 1 and -1 <= x.min() and x.max() <= 1
    batch = torch.stack([x, x])
    out = data.augment(batch, torch.tensor([[0, 0, 0.2], [0, 0, 0.8]]), None)
    assert torch.equal(out[0], x.flip(-1)) and torch.equal(out[1], x)


def test_latent_shards_round_trip(tmp_path):
    pytest.importorskip("diffusers")
    images = _image_folder(tmp_path / "img", per_class=3, size=16)
    out = extract_latents(images, tiny_vae_folder(tmp_path / "vae"), tmp_path / "lat", 16, shard_size=4,
                          batch_size=2, progress=False)
    data = build_data(DataConfig(kind="latents", path=str(out)))
    assert len(data.dataset) == 6 and len(data.dataset.shards) == 2 and data.num_classes == 2
    assert data.sample_shape == (4, 2, 2) and data.uses_normals
    moments, label = data.dataset[5]
    assert moments.shape == (2, 2, 4, 2, 2) and label == 1  # (mean|std, original|mirrored, C, h, w)
    batch = torch.stack([moments, moments])
    zeros = torch.zeros(2, 4, 2, 2)
    picked = data.augment(batch, torch.tensor([[0, 0, 0.9], [0, 0, 0.1]]), zeros)  # normals 0 -> the means
    assert torch.equal(picked[0], moments[0, 0]) and torch.equal(picked[1], moments[0, 1])
    ones = data.augment(batch, torch.tensor([[0, 0, 0.9], [0, 0, 0.9]]), torch.ones(2, 4, 2, 2))
    assert torch.allclose(ones[0], moments[0, 0] + moments[1, 0])  # mean + std * 1


def test_digits_dataset():
    pytest.importorskip("sklearn")
    data = build_data(DataConfig(kind="digits"))
    assert len(data.dataset) == 1797 and data.sample_shape == (1, 16, 16) and data.num_classes == 10
    x, y = data.dataset[0]
    assert x.min() >= -1 and x.max() <= 1 and y == 0
