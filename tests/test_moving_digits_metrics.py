"""The moving-digits yardstick recognises the real data: every motion, and nearly every digit."""

import torch

from skipdit.datasets import make_moving_digits
from skipdit.io import video_to_uint8
from skipdit.metrics import moving_digits as md


def test_real_moving_digits_score_high_and_wrong_labels_low():
    data = make_moving_digits(seed=3)
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:300]
    videos = video_to_uint8(data.videos[pick])
    labels, moves = data.labels[pick], data.motions[pick]
    right = md.score(videos, labels, moves)
    assert right["motion_accuracy"] == 1.0 and right["digit_accuracy"] > 0.93
    wrong = md.score(videos, (labels + 1) % 10, (moves + 1) % 4)
    assert wrong["motion_accuracy"] == 0.0 and wrong["digit_accuracy"] < 0.05


def test_reversed_video_reverses_the_motion():
    data = make_moving_digits(seed=0)
    videos = video_to_uint8(data.videos[:8])
    reverse = {0: 1, 1: 0, 2: 3, 3: 2}
    assert md.motions(videos.flip(1)).tolist() == [reverse[m] for m in data.motions[:8].tolist()]
    blank = torch.zeros(1, 4, 16, 16, 1, dtype=torch.uint8)
    torch.testing.assert_close(md.centres_of_mass(blank)[0, 0], torch.tensor([7.5, 7.5]))
