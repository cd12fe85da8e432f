"""The dependency direction of the package: ops -> layers -> models -> train -> cli.

A module may import from its own level or lower ones, never upward. The levels follow
the course: pure math first, the command line last. ``cnnkit/__init__.py`` (the public
surface) is exempt.
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
