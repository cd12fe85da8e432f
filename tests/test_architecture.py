"""The dependency direction of the package: ops -> layers -> models -> train -> cli.

A module may import from its own level or lower ones, never upward. The levels follow
the course: pure math first, the command line last. ``cnnkit/__init__.py`` (the public
surface) is exempt. And no module reaches itself again through its imports (no import
cycle), counting the imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnkit"

LEVEL = {
    "_core": 0,
    "ops": 1,
    "layers": 2,
    "models": 3,
    "losses": 3,
    "metrics": 3,
    "data": 3,
    "train": 4,
    "interpret": 4,
    "report": 5,
    "cli": 6,
}
# pairs at the same level that must still not meet
FORBIDDEN = {("data", "models"), ("data", "losses"), ("data", "metrics"), ("interpret", "train")}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.parent != SRC)


def test_every_subpackage_has_a_level():
    subpackages = {p.relative_to(SRC).parts[0] for p in _modules()}
    subpackages = {s.removesuffix(".py") for s in subpackages}
    unknown = subpackages - set(LEVEL) - {"__main__", "py.typed"}
    assert not unknown, f"give these a level in tests/test_architecture.py: {unknown}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_upward_imports(path: Path):
    own = path.relative_to(SRC).parts[0].removesuffix(".py")
    if own not in LEVEL:
        pytest.skip(f"{own} is not a subpackage")
    for lineno, name in _imports(path):
        parts = name.split(".")
        if parts[0] != "cnnkit":
            continue
        if len(parts) == 1:
            pytest.fail(f"{path.relative_to(SRC)}:{lineno} imports the top-level cnnkit package")
        target = parts[1]
        assert LEVEL.get(target, 99) <= LEVEL[own], (
            f"{path.relative_to(SRC)}:{lineno} imports {name}: {own} (level {LEVEL[own]}) "
            f"may not import {target} (level {LEVEL.get(target)})"
        )
        assert (own, target) not in FORBIDDEN, (
            f"{path.relative_to(SRC)}:{lineno}: {own} -> {target}"
        )


def test_pure_math_needs_no_torch():
    for rel in ("ops/arithmetic.py", "ops/reference.py", "_core/errors.py", "_core/registry.py"):
        path = SRC / rel
        if not path.exists():
            continue
        names = [n for _, n in _imports(path)]
        assert not any(n.split(".")[0] == "torch" for n in names), f"{rel} imports torch"


# ------------------------------------------------------------------------ import cycles


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = ["cnnkit", *path.relative_to(src).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """``module -> modules it imports`` inside the package, from every ``import`` and
    ``from ... import`` in the file (module level or inside functions), relative ones
    resolved. ``from pkg import name`` points at ``pkg.name`` where that is a module."""
    files = {_module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]  # fmt: skip
            else:
                continue
            for target in targets:
                while target and target not in files:  # a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_find_cycle_reports_a_loop_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "cnnkit"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "a.py").write_text("from cnnkit.train.b import f\n")
    (pkg / "train" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "train" / "c.py").write_text("import cnnkit.train.a\n")
    graph = _import_graph(pkg)
    assert graph["cnnkit.train.b"] == {"cnnkit.train.c"}
    assert find_cycle(graph) == ["cnnkit.train.a", "cnnkit.train.b", "cnnkit.train.c",
                                 "cnnkit.train.a"]  # fmt: skip
    (pkg / "train" / "c.py").write_text("import cnnkit.train\n")
    assert find_cycle(_import_graph(pkg)) is None


def test_no_import_cycles():
    cycle = find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
