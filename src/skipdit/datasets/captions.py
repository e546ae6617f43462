"""The captioned digits: every digit once per caption phrasing ("a handwritten seven", "the digit 7", ...),
the data of the built-in text-to-image model. The number words are shared with the moving-digit captions
(:mod:`.moving_digits`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .digits import load_digits_tensors

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Captions of the captioned digits; caption id = digit * len(DIGIT_CAPTIONS) + phrasing.
DIGIT_CAPTIONS = ("a handwritten {word}", "the digit {digit}", "the number {word}", "a handwritten {digit}")


def digit_caption(digit: int, phrasing: int = 0) -> str:
    """``digit_caption(4) == "a handwritten four"``."""
    return DIGIT_CAPTIONS[phrasing].format(digit=digit, word=NUMBER_WORDS[digit])


@dataclass
class CaptionedDigits:
    """The 16x16 digits as one-frame videos, item ``n`` is ``image * len(DIGIT_CAPTIONS) + phrasing``."""

    videos: torch.Tensor  # (N, 1, 1, 16, 16) in [-1, 1]: (channels, frames, height, width) per item
    caption_ids: torch.Tensor  # (N,) index into captions
    captions: list[str]  # every digit x phrasing, in that order
    caption_labels: torch.Tensor  # (len(captions),) the digit of each caption id

    def __len__(self) -> int:
        return len(self.videos)


def captioned_digits() -> CaptionedDigits:
    """Every digit once per phrasing of :data:`DIGIT_CAPTIONS`, as a one-frame video."""
    images, labels = load_digits_tensors()
    phrasings = len(DIGIT_CAPTIONS)
    ids = (labels[:, None] * phrasings + torch.arange(phrasings)).flatten()  # (N * phrasings,)
    videos = images.unsqueeze(2).repeat_interleave(phrasings, 0)  # (N * phrasings, 1, 1, 16, 16)
    captions = [digit_caption(d, k) for d in range(10) for k in range(phrasings)]
    return CaptionedDigits(videos, ids, captions, torch.arange(len(captions)) // phrasings)
