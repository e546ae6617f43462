"""The built-in data, generated from scikit-learn's handwritten digits on every machine alike:

* ``digits`` (:mod:`.digits`): the 1,797 digits at 16x16 in [-1, 1], and their one-pixel shifts;
* ``captioned-digits`` (:mod:`.captions`): the same digits as one-frame videos, once per caption phrasing;
* ``moving-digits`` (:mod:`.moving_digits`): videos of the 8x8 digits moving on a canvas, with captions.

Training (:mod:`skipdit.train.data` wraps them as training sets) and the metrics (the digits evaluator,
the ``digits-real`` reference set, the moving-digit scorer) both read them here, so neither imports the other.
"""

from .captions import DIGIT_CAPTIONS, NUMBER_WORDS, CaptionedDigits, captioned_digits, digit_caption
from .digits import DIGITS_SIZE, load_digits8, load_digits_tensors, shift_by_one
from .moving_digits import (
    CAPTION_TEMPLATES,
    DIGIT_SIZE,
    MOTION_PHRASES,
    MOTIONS,
    NUM_DIGIT_CLASSES,
    MovingDigits,
    all_captions,
    caption,
    make_moving_digits,
    moving_digit,
    start_position,
)

__all__ = [
    "CAPTION_TEMPLATES", "DIGITS_SIZE", "DIGIT_CAPTIONS", "DIGIT_SIZE", "MOTIONS", "MOTION_PHRASES",
    "NUMBER_WORDS", "NUM_DIGIT_CLASSES", "CaptionedDigits", "MovingDigits", "all_captions", "caption",
    "captioned_digits", "digit_caption", "load_digits8", "load_digits_tensors", "make_moving_digits",
    "moving_digit", "shift_by_one", "start_position",
]
