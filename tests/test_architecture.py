"""The package's shape: one-way dependencies (no import cycle, counting imports inside
functions too), small modules, and no private name used across modules."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vitcls_utils"
MAX_LINES = 400


def imports_of(path: Path) -> list:
    """(module imported, names) of every intra-package import anywhere in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level == 1:
                found += [(node.module.split(".")[0], names)] if node.module else \
                    [(name, []) for name in names]
            elif node.level == 0 and (node.module or "").startswith("vitcls_utils."):
                found.append((node.module.split(".")[1], names))
    return found


def graph() -> dict:
    return {path.stem: {m for m, _ in imports_of(path)} - {path.stem}
            for path in PACKAGE.glob("*.py")}


def test_the_import_graph_has_no_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(edges.get(module, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep in edges and dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
    assert "registry" in edges["loading"]  # the graph is read, not empty


def test_modules_are_small_and_keep_their_private_names():
    long = {p.name: n for p in PACKAGE.glob("*.py")
            if (n := p.read_text().count("\n")) > MAX_LINES}
    assert not long, f"split by concept: {long}"
    private = [(p.name, m, name) for p in PACKAGE.glob("*.py") for m, names in imports_of(p)
               for name in names if name.startswith("_") and not name.startswith("__")]
    assert not private, private
