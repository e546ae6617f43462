"""The layering of DESIGN.md §2, checked on the source: imports only go down the picture, and never in a circle.

Every ``import`` and ``from ... import`` of every file of ``src/skipdit`` counts, wherever it stands: at the top,
inside a function (that is where cycles used to hide), inside ``try``. Relative imports are resolved to absolute
module names. Imports under ``if TYPE_CHECKING:`` are left out: they never run, so they make no import-time
dependency (annotations are strings under ``from __future__ import annotations``).

The graph has one *node* per part of the package: a subpackage is one node (``skipdit.cache.adapters.blocks``
belongs to ``cache``), a top-level module is a node of its own (``skipdit.sampling`` is ``sampling``), and the
package's ``__init__`` (the public API) is ``skipdit``.

See the graph and what breaks the rules::

    PYTHONPATH=src python tests/test_layering.py
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "skipdit"
ROOT_NODE = PACKAGE  # the node of the package's own __init__.py

# DESIGN.md §2: `models` and `diffusion` import nothing of skipdit but these ...
ONLY = {"models": {"registry", "protocol", "errors"}, "diffusion": {"registry", "protocol", "errors"}}
# ... these parts never import those ...
NEVER = {"cache": {"sampling", "bench", "cli", "train", "tuning"}, "metrics": {"train"}}
# ... and the CLI sits on top: only itself and `python -m skipdit` import it.
CLI_NODE = "cli"
CLI_IMPORTERS = {"cli", "__main__"}


@dataclass(frozen=True)
class Import:
    """``module`` (in ``path``, at ``line``) imports the skipdit module ``target``."""

    module: str
    target: str
    path: Path
    line: int

    def where(self, base: Path) -> str:
        return f"{self.path.relative_to(base).as_posix()}:{self.line}"


# -- the graph ----------------------------------------------------------------------------------------------
def package_dir(package: str = PACKAGE) -> Path:
    """The folder of ``package`` on ``sys.path`` (found without importing it, so without importing torch)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package} not found: run with PYTHONPATH=src")
    return Path(next(iter(spec.submodule_search_locations)))


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` under ``root`` (a package's module is its ``__init__.py``)."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except in the body of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names: ``from ..x import y`` in ``skipdit.cache.tune`` -> ``skipdit.x``."""
    if node.level == 0:
        return node.module
    parts = module.split(".") if is_package else module.split(".")[:-1]  # the package the file belongs to
    if node.level - 1 >= len(parts):
        raise ValueError(f"{module}: relative import beyond the top-level package (line {node.lineno})")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def find_imports(root: Path, package: str = PACKAGE) -> list[Import]:
    """Every import of a module of ``package`` by a module of ``package``, with its file and line."""
    files = module_files(root, package)
    found = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(module, is_package, node)
                # `from pkg import sub` imports the submodule pkg.sub; any other name is an attribute of pkg
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in files]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            found += [Import(module, target, path, node.lineno) for target in targets
                      if target == package or target.startswith(package + ".")]
    return sorted(found, key=lambda imp: (imp.module, imp.line, imp.target))


def node_of(module: str, package: str = PACKAGE) -> str:
    """``skipdit.cache.adapters.blocks`` -> ``cache``, ``skipdit.sampling`` -> ``sampling``, ``skipdit`` -> itself."""
    parts = module.split(".")
    return package if len(parts) == 1 else parts[1]


def node_graph(imports: list[Import], package: str = PACKAGE) -> dict[str, dict[str, list[Import]]]:
    """node -> {node it imports -> the imports that make the edge}; imports within a node are no edges."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for imp in imports:
        src, dst = node_of(imp.module, package), node_of(imp.target, package)
        deps = graph.setdefault(src, {})
        graph.setdefault(dst, {})  # a node that imports nothing is listed too
        if src != dst:
            deps.setdefault(dst, []).append(imp)
    return graph


# -- the rules ----------------------------------------------------------------------------------------------
def _strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node (each one holds a cycle)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def _shortest_cycle(graph: dict[str, dict[str, list[Import]]], start: str, within: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside ``within`` (breadth-first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w not in within:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def _sites(imports: list[Import], base: Path) -> str:
    return ", ".join(f"{imp.where(base)} ({imp.module} -> {imp.target})" for imp in imports)


def cycle_violations(graph: dict[str, dict[str, list[Import]]], base: Path) -> list[str]:
    """One entry per strongly connected component: a shortest cycle through it, then every import between its
    nodes (removing all of one edge's imports may break the cycle shown and leave another)."""
    out = []
    for component in _strongly_connected(graph):
        members = set(component)
        cycle = _shortest_cycle(graph, component[0], members)
        lines = [f"import cycle {' -> '.join(cycle)} (nodes in the cycle: {', '.join(component)})"]
        for src in component:
            for dst in sorted(graph[src]):
                if dst in members:
                    lines.append(f"    {src} -> {dst}: {_sites(graph[src][dst], base)}")
        out.append("\n".join(lines))
    return out


def layer_violations(graph: dict[str, dict[str, list[Import]]], base: Path) -> list[str]:
    """Every upward import (the rules at the top of this file), one entry per import."""
    out = []
    for src in sorted(graph):
        for dst, imports in sorted(graph[src].items()):
            if src in ONLY and dst not in ONLY[src]:
                rule = f"{src} imports nothing of {PACKAGE} but {', '.join(sorted(ONLY[src]))}"
            elif dst in NEVER.get(src, ()):
                rule = f"{src} must not import {', '.join(sorted(NEVER[src]))}"
            elif dst == CLI_NODE and src not in CLI_IMPORTERS:
                rule = f"only {' and '.join(sorted(CLI_IMPORTERS))} import {PACKAGE}.cli"
            else:
                continue
            out += [f"{imp.where(base)}: {imp.module} imports {imp.target} ({src} -> {dst}; {rule})"
                    for imp in imports]
    return out


def command_violations(imports: list[Import], base: Path, package: str = PACKAGE) -> list[str]:
    """A ``skipdit.cli.X_cmd`` module that imports another ``*_cmd`` module, or the ``skipdit.cli`` package
    (whose ``__init__`` imports every command). Shared helpers (``cli/common.py``, ``cli/help.py``) are fine."""
    pattern = re.compile(rf"^{re.escape(package)}\.{CLI_NODE}\.(\w+_cmd)$")  # one module per subcommand
    out = []
    for imp in imports:
        command = pattern.match(imp.module)
        if not command:
            continue
        other = pattern.match(imp.target)
        if (other and other[1] != command[1]) or imp.target == f"{package}.{CLI_NODE}":
            out.append(f"{imp.where(base)}: {imp.module} imports {imp.target}")
    return out


def _report(title: str, violations: list[str]) -> str:
    return f"{len(violations)} {title}:\n" + "\n".join(violations)


# -- the tests ----------------------------------------------------------------------------------------------
def _skipdit():
    root = package_dir()
    imports = find_imports(root)
    return root.parent, imports, node_graph(imports)


def test_no_import_cycles_between_parts():
    base, _, graph = _skipdit()
    violations = cycle_violations(graph, base)
    assert not violations, _report("import cycles", violations)


def test_no_upward_imports():
    base, _, graph = _skipdit()
    violations = layer_violations(graph, base)
    assert not violations, _report("upward imports", violations)


def test_cli_commands_do_not_import_each_other():
    base, imports, _ = _skipdit()
    violations = command_violations(imports, base)
    assert not violations, _report("CLI commands importing other commands", violations)


def test_the_walker_resolves_relative_and_hidden_imports(tmp_path):
    """On a made-up package: relative levels, submodules named in ``from . import``, imports in functions
    and in ``try``, ``TYPE_CHECKING`` left out; then a cycle, an upward import and a command importing another."""
    files = {
        "__init__.py": "from .sampling import generate\n",
        "errors.py": "",
        "sampling.py": "from .cache import policy\nfrom . import errors\n",
        "cache/__init__.py": "from .policy import Policy\n",
        "cache/policy.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..train import loop\n"
            "def tune():\n    try:\n        from ..sampling import generate\n    except ImportError:\n        pass\n"
        ),
        "cache/adapters/__init__.py": "from .. import policy\nfrom ..policy import Policy\nimport pkg.models.dit\n",
        "models/__init__.py": "", "models/dit.py": "from ..errors import UserError\nfrom .. import registry\n",
        "registry.py": "",
        "train/__init__.py": "", "train/loop.py": "",
        "cli/__init__.py": "from . import a_cmd, b_cmd\n", "cli/common.py": "",
        "cli/a_cmd.py": "from .common import x\nfrom .b_cmd import y\n", "cli/b_cmd.py": "from . import common\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    imports = find_imports(tmp_path / "pkg", "pkg")
    seen = {(i.module, i.target, i.line) for i in imports}
    assert ("pkg.cache.policy", "pkg.sampling", 6) in seen  # in a function, in a try
    assert not any(i.target.startswith("pkg.train") for i in imports)  # TYPE_CHECKING only
    assert ("pkg.cache.adapters", "pkg.cache.policy", 1) in seen  # `from .. import policy` is the submodule
    assert ("pkg.cache.adapters", "pkg.cache", 1) not in seen
    assert ("pkg.cache.adapters", "pkg.models.dit", 3) in seen
    assert ("pkg.models.dit", "pkg.registry", 2) in seen and ("pkg.sampling", "pkg.errors", 2) in seen
    graph = node_graph(imports, "pkg")
    assert sorted(graph["cache"]) == ["models", "sampling"] and sorted(graph["models"]) == ["errors", "registry"]
    assert [c.splitlines()[0] for c in cycle_violations(graph, tmp_path)] == [
        "import cycle cache -> sampling -> cache (nodes in the cycle: cache, sampling)"]
    assert cycle_violations(graph, tmp_path)[0].splitlines()[1:] == [
        "    cache -> sampling: pkg/cache/policy.py:6 (pkg.cache.policy -> pkg.sampling)",
        "    sampling -> cache: pkg/sampling.py:1 (pkg.sampling -> pkg.cache.policy)",
    ]
    assert layer_violations(graph, tmp_path) == [
        "pkg/cache/policy.py:6: pkg.cache.policy imports pkg.sampling (cache -> sampling; cache must not import "
        "bench, cli, sampling, train, tuning)"]
    assert command_violations(imports, tmp_path, "pkg") == ["pkg/cli/a_cmd.py:2: pkg.cli.a_cmd imports pkg.cli.b_cmd"]


# -- the printer --------------------------------------------------------------------------------------------
def main() -> int:
    base, imports, graph = _skipdit()
    print(f"import graph of {PACKAGE} ({len(imports)} imports between its modules; node -> nodes it imports):")
    for src in sorted(graph):
        print(f"  {src} -> {', '.join(sorted(graph[src])) or '(nothing)'}")
    failed = 0
    for title, violations in (("import cycles", cycle_violations(graph, base)),
                              ("upward imports", layer_violations(graph, base)),
                              ("CLI commands importing other commands", command_violations(imports, base))):
        print()
        print(_report(title, violations) if violations else f"no {title}")
        failed += len(violations)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
