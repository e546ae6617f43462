"""``UserError``: everything a user can get wrong.

The library raises it at its boundary (a bad option, a missing or corrupt file, a value out of range, a
missing optional dependency) with one sentence that names the problem; the CLI prints
``skipdit: error: <sentence>`` and exits with code 2. Anything else is a bug and keeps its traceback.
It is a ``ValueError``, so ``except ValueError`` still catches it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: one sentence naming the problem (and, where it helps, what would be valid)."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocator running out of memory: Python's ``MemoryError``, CUDA's
    ``OutOfMemoryError`` or the CPU allocator's ``RuntimeError`` (torch has no type of its own for that one).
    A smaller request fixes these, so they are reported to the user, not as bugs."""
    if isinstance(err, MemoryError):
        return True
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("DefaultCPUAllocator: can't allocate memory" in text
                                              or "DefaultCPUAllocator: not enough memory" in text)
