"""``UserError``: everything a user can get wrong.

The library raises it at its boundary (a bad option, a missing or corrupt file, a value out of range, a
missing optional dependency) with one sentence that names the problem; the CLI prints
``skipdit: error: <sentence>`` and exits with code 2. Anything else is a bug and keeps its traceback.
It is a ``ValueError``, so ``except ValueError`` still catches it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: one sentence naming the problem (and, where it helps, what would be valid)."""
