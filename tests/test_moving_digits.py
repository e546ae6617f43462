"""Moving digits: geometry checkable by arithmetic, exact pixels, captions, determinism."""

import pytest
import torch

pytest.importorskip("sklearn")

from skipdit.datasets import (  # noqa: E402
    CAPTION_TEMPLATES,
    MOTION_PHRASES,
    MOTIONS,
    NUMBER_WORDS,
    caption,
    load_digits8,
    make_moving_digits,
    moving_digit,
    start_position,
)


@pytest.fixture(scope="module")
def data():
    return make_moving_digits()


def centre_of_mass(frame: torch.Tensor) -> torch.Tensor:
    """(row, col) centre of mass of ``frame + 1`` (the background weighs nothing)."""
    weight = frame + 1
    rows, cols = torch.meshgrid(torch.arange(frame.shape[0]), torch.arange(frame.shape[1]), indexing="ij")
    return torch.stack([(weight * rows).sum(), (weight * cols).sum()]).double() / weight.sum()


def test_shapes_and_range(data):
    n = 1797 * 4
    assert data.videos.shape == (n, 1, 8, 16, 16) and data.videos.dtype == torch.float32
    assert data.labels.shape == data.motions.shape == data.caption_ids.shape == (n,)
    assert data.videos.min() == -1 and data.videos.max() <= 1
    assert len(data.captions) == 10 * 4 * len(CAPTION_TEMPLATES) == len(set(data.captions))
    assert torch.equal(data.motions[:8], torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))  # every digit x every motion
    assert torch.equal(torch.bincount(data.motions), torch.full((4,), 1797))


@pytest.mark.parametrize("motion", MOTIONS)
def test_the_digit_moves_one_pixel_per_frame(data, motion):
    m = MOTIONS.index(motion)
    expected = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[motion]
    for n in torch.nonzero(data.motions == m)[:20, 0].tolist():
        com = torch.stack([centre_of_mass(f) for f in data.videos[n, 0]])  # (F, 2)
        steps = com[1:] - com[:-1]
        assert torch.allclose(steps, torch.tensor(expected, dtype=torch.double).expand_as(steps), atol=1e-9)


def test_frame_zero_is_the_sklearn_digit_at_the_start(data):
    digits, labels = load_digits8()
    from sklearn.datasets import load_digits

    raw = torch.from_numpy(load_digits().images).float()
    assert torch.equal(digits, raw / 8 - 1)
    # 16x16 canvas, 8 frames: "right"/"down" start at 0, "left"/"up" at 8 (the path of 7 px is centred in 8).
    assert [start_position(m, 8, 16) for m in range(4)] == [8, 0, 8, 0]
    for n in range(0, 40):
        image, m, offset = n // 4, int(data.motions[n]), int(data.offsets[n])
        along = [8, 0, 8, 0][m]
        top, left = (along, offset) if MOTIONS[m] in ("up", "down") else (offset, along)
        expected = torch.full((16, 16), -1.0)
        expected[top : top + 8, left : left + 8] = digits[image]
        assert torch.equal(data.videos[n, 0, 0], expected)
        assert data.labels[n] == labels[image]


def test_moving_digit_matches_the_dataset(data):
    digits, _ = load_digits8()
    for n in (0, 5, 123):
        video = moving_digit(digits[n // 4], int(data.motions[n]), offset=int(data.offsets[n]))
        assert torch.equal(video, data.videos[n, 0])


def test_captions():
    assert caption(7, MOTIONS.index("up")) == "the digit 7 moves up"
    assert caption(3, MOTIONS.index("left")) == "the digit 3 moves to the left"
    for digit in range(10):
        for m in range(4):
            for t in range(len(CAPTION_TEMPLATES)):
                text = caption(digit, m, t)
                assert (str(digit) in text or NUMBER_WORDS[digit] in text) and text.endswith(MOTION_PHRASES[m])
    with pytest.raises(ValueError, match="motion"):
        caption(1, 4)


def test_caption_ids_agree_with_labels_and_motions(data):
    for n in range(0, len(data), 997):
        text = data.caption(n)
        assert text.endswith(MOTION_PHRASES[int(data.motions[n])])
        digit = int(data.labels[n])
        assert str(digit) in text or NUMBER_WORDS[digit] in text
    assert len(torch.unique(data.caption_ids % len(CAPTION_TEMPLATES))) == len(CAPTION_TEMPLATES)  # all templates used


def test_determinism(data):
    again = make_moving_digits(seed=0)
    assert torch.equal(again.videos, data.videos) and torch.equal(again.caption_ids, data.caption_ids)
    other = make_moving_digits(seed=1)
    assert not torch.equal(other.offsets, data.offsets)
    assert not torch.equal(other.videos, data.videos)
    assert torch.equal(other.labels, data.labels) and torch.equal(other.motions, data.motions)


def test_other_geometry_and_copies():
    data = make_moving_digits(num_frames=4, canvas=12, copies=2)
    assert data.videos.shape == (1797 * 4 * 2, 1, 4, 12, 12)
    assert int(data.offsets.max()) <= 4


def test_canvas_too_small():
    with pytest.raises(ValueError, match="canvas"):
        make_moving_digits(num_frames=8, canvas=14)
    with pytest.raises(ValueError, match="canvas"):
        moving_digit(torch.zeros(8, 8), 0, num_frames=3, canvas=9)
    with pytest.raises(ValueError, match="offset"):
        moving_digit(torch.zeros(8, 8), 0, offset=9)


def test_per_class_keeps_the_first_digits_of_each_class():
    few = make_moving_digits(copies=2, per_class=3)
    assert len(few) == 10 * 3 * 4 * 2 and torch.bincount(few.labels).tolist() == [24] * 10
    images, labels = load_digits8()
    firsts = torch.stack([images[labels == d][:3] for d in range(10)])  # (10, 3, 8, 8)
    for video, label, motion, offset in zip(few.videos, few.labels, few.motions, few.offsets):
        candidates = [moving_digit(firsts[label, k], int(motion), offset=int(offset)) for k in range(3)]
        assert any(torch.equal(video[0], c) for c in candidates)
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        make_moving_digits(per_class=0)
