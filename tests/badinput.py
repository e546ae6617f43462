"""The bad-input contract, shared by the ``test_bad_input*.py`` files.

``expect_user_error(capsys, argv, message, watch=...)`` runs the CLI in-process and checks that it:

- exits with code 2,
- prints exactly one line on stderr, ``skipdit: error: ...``, that contains ``message`` (a regex),
- prints no traceback,
- left every watched input file byte-for-byte as it was,
- left no new file under the watched output folders (no partial output).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from skipdit.cli import main


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def expect_user_error(capsys, argv, message: str, *, inputs=(), outputs=()) -> str:
    """Run ``skipdit argv``; assert the contract above; return the stderr line."""
    argv = [str(a) for a in argv]
    inputs = [Path(p) for p in inputs]
    outputs = [Path(p) for p in outputs]
    before = {p: _digest(p) for p in inputs}
    trees = {p: _tree(p) for p in outputs}
    capsys.readouterr()
    code = main(argv)
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code} for {argv}; stderr: {err!r}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one stderr line for {argv}, got {len(lines)}: {err!r}"
    assert lines[0].startswith("skipdit: error: "), lines[0]
    assert re.search(message, lines[0]), f"{message!r} not in {lines[0]!r}"
    for p, digest in before.items():
        assert _digest(p) == digest, f"{p} changed"
    for p, names in trees.items():
        assert _tree(p) == names, f"partial output left in {p}: {sorted(_tree(p) - names)}"
    return lines[0]
