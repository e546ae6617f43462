"""How every ``--help`` reads: each option's default shown, examples one per line, the same words for the
same options everywhere."""

from __future__ import annotations

import argparse

from ..assets import BUILTIN_MODELS

MODEL_HELP = f"a built-in model ({', '.join(BUILTIN_MODELS)}) or a checkpoint"
NO_PROGRESS_HELP = "no progress bars: neither skipdit's nor those of transformers, diffusers and huggingface_hub"
DEVICE_HELP = "cpu, cuda or cuda:N (cuda when a GPU is visible)"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (each example stays on its own line), and every option's help
    ends with its default, so the help cannot disagree with the code. An option whose help already says
    what its default means (``(default: all)`` for ``None``) keeps its words; flags show nothing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default is argparse.SUPPRESS or default == []
        if not action.option_strings or nothing or "default" in text:  # 0 and 0.0 are defaults to show
            return text
        shown = repr(default) if default == "" else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"  # help strings are %-formatted


def examples(*lines: str, note: str = "") -> str:
    """An epilog: ``examples:`` and one command per line (no shell continuations, which argparse would
    print as they are and a reader could not tell from two commands), then an optional paragraph."""
    text = "examples:\n" + "".join(f"  {line}\n" for line in lines)
    return text + (f"\n{note.strip()}\n" if note else "")
