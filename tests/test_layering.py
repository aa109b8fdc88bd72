"""The layers stay layers: `sessions/` (engines, workers) and `ratelimit/` (the scheduler) are
the ground the core (`gateway/`) builds on, so they never import it, not even inside a
function; and neonize, the native bridge, is imported by `sessions/` only. Read from the
source with `ast`, so an import that runs only on some path is caught too."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# folder -> module prefixes its code must not import
FORBIDDEN = {
    "sessions": ("zapgate.gateway",),
    "ratelimit": ("zapgate.gateway", "zapgate.sessions", "neonize"),
    "gateway": ("neonize",),
}


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every module an import statement names (`from a import b` names `a` and `a.b`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def violations(folder: str) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module in imported_modules(tree):
            if any(module == p or module.startswith(p + ".") for p in FORBIDDEN[folder]):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_lower_layers_never_import_the_ones_above(folder: str) -> None:
    assert violations(folder) == []


def test_the_walk_sees_every_kind_of_import() -> None:
    """The check itself: each spelling of a forbidden import is found."""
    source = (
        "import zapgate.gateway.ops\n"
        "from zapgate.gateway.store import x\n"
        "from zapgate import gateway\n"
        "def f():\n"
        "    from zapgate.gateway.ops.logs import configure_logging\n"
    )
    lines = {line for line, module in imported_modules(ast.parse(source)) if "gateway" in module}
    assert lines == {1, 2, 3, 5}
