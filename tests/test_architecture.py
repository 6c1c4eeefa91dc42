"""The package's shape: layer subpackages whose imports point only down the stack (counting
imports inside functions), no import cycle, small modules, no private name used across modules,
thin notebooks, and an ARCHITECTURE.md that lists exactly the modules there are."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vitcls_utils"
#: the layers, lowest first: a module imports only from its own layer and the ones before it
LAYERS = ("base", "datasets", "model", "stores", "training", "analysis", "report", "running")
#: modules allowed in the package root: the package itself and private shims
ROOT_MODULES = {"__init__", "_compat", "_tvshim", "_moved"}
MAX_LINES = 400
MAX_CELL_LINES = 10


def module_name(path: Path) -> str:
    """'layer.module' of a file in a layer, or the root module's name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def resolve(path: Path, node: ast.ImportFrom) -> list:
    """The package modules (dotted, under vitcls_utils) an import statement reads, with the
    names it takes: [(module, [names])]."""
    here = module_name(path).split(".")
    if node.level:
        base = here[:len(here) - node.level]
        target = base + (node.module.split(".") if node.module else [])
    elif (node.module or "").split(".")[0] == "vitcls_utils":
        target = node.module.split(".")[1:]
    else:
        return []
    names = [alias.name for alias in node.names]
    if node.module is None or len(target) == 1 and target[0] in LAYERS:
        # from . import x  /  from ..layer import module
        return [(".".join(target + [name]) if target else name, []) for name in names]
    return [(".".join(target), names)]


def imports_of(path: Path) -> list:
    """(module, names) of every intra-package import anywhere in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found += resolve(path, node)
    return found


def layer_of(module: str) -> int:
    """Index of a module's layer; -1 for the package root and its private shims."""
    head = module.split(".")[0]
    return LAYERS.index(head) if head in LAYERS else -1


def modules() -> dict:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")
            if p.name != "__init__.py" or p.parent == PACKAGE}


def graph() -> dict:
    return {name: {m for m, _ in imports_of(path)} - {name} for name, path in modules().items()}


def test_every_module_sits_in_a_layer():
    stray = [p.name for p in PACKAGE.glob("*.py") if p.stem not in ROOT_MODULES]
    assert not stray, f"move into a layer subpackage: {stray}"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS), folders ^ set(LAYERS)
    assert all((PACKAGE / layer / "__init__.py").exists() for layer in LAYERS)


def test_imports_point_down_the_layers():
    up = []
    for name, path in modules().items():
        for target, _ in imports_of(path):
            if name != "__init__" and layer_of(target) > layer_of(name):
                up.append(f"{name} -> {target}")
    assert not up, up


def test_the_direction_test_sees_an_upward_import(tmp_path):
    """A lower layer that imports a higher one, even inside a function, is caught."""
    fake = PACKAGE / "base" / "sites.py"
    node = ast.parse("def f():\n    from ..report import notebook\n").body[0].body[0]
    (target, _), = resolve(fake, node)
    assert target == "report.notebook" and layer_of(target) > layer_of("base.sites")
    node = ast.parse("from ..model.hooks import hooks").body[0]
    assert resolve(PACKAGE / "stores" / "extraction.py", node) == [("model.hooks", ["hooks"])]


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
    assert "model.registry" in edges["model.loading"]  # the graph is read, not empty


def test_modules_are_small_and_keep_their_private_names():
    long = {name: n for name, p in modules().items()
            if (n := p.read_text().count("\n")) > MAX_LINES}
    assert not long, f"split by concept: {long}"
    private = [(name, m, imported) for name, p in modules().items()
               for m, names in imports_of(p) for imported in names
               if imported.startswith("_") and not imported.startswith("__")]
    assert not private, private


def test_notebook_cells_are_thin():
    """Logic lives in the package: no code cell but the parameters cell over ~10 lines."""
    thick = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            tags = cell.get("metadata", {}).get("tags", [])
            if cell["cell_type"] != "code" or "parameters" in tags or "remove-cell" in tags:
                continue
            lines = [line for line in "".join(cell["source"]).splitlines() if line.strip()]
            if len(lines) > MAX_CELL_LINES:
                thick.append(f"{path.name} cell {index}: {len(lines)} lines")
    assert not thick, thick


def test_nothing_imports_an_old_flat_path():
    """Notebooks, tests, benchmarks and the package use the layered paths; the old ones are for
    user code only (and warn)."""
    from vitcls_utils._moved import MOVED, SPLIT

    old = "|".join(sorted(set(MOVED) | set(SPLIT)))
    pattern = re.compile(rf"vitcls_utils\.({old})\b|from vitcls_utils import [^\n]*\b({old})\b")
    files = [p for p in list(ROOT.glob("notebooks/*.ipynb")) + list(ROOT.glob("tests/*.py"))
             + list(ROOT.glob("benchmarks/*.py")) + list(PACKAGE.rglob("*.py"))
             if p.name not in {"test_moved.py", "_moved.py"}]
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files
            for m in pattern.finditer(p.read_text())]
    assert not hits, hits


def architecture_modules() -> set:
    """The modules ARCHITECTURE.md's tables name (``layer/module``)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    return set(re.findall(r"`(\w+/\w+)`", text))


def test_architecture_md_lists_exactly_the_modules():
    listed = architecture_modules()
    present = {name.replace(".", "/") for name in modules() if "." in name}
    assert listed, "ARCHITECTURE.md names no layer/module"
    assert not present - listed, f"add to ARCHITECTURE.md: {sorted(present - listed)}"
    assert not listed - present, f"not in the package: {sorted(listed - present)}"


def notebook_api() -> set:
    """(module, name) of every package function or class the notebooks and the README call:
    ``nb.method`` as ``NotebookRun.method``."""
    import importlib

    used = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                         if c["cell_type"] == "code")
        local = {}
        for match in re.finditer(r"^from (vitcls_utils[\w.]*) import (.+)$", code, re.M):
            for item in match.group(2).split(","):
                name, _, alias = item.strip().partition(" as ")
                local[alias or name] = f"{match.group(1)}.{name}"
        for name, module in local.items():
            try:
                importlib.import_module(module)
            except ModuleNotFoundError:
                continue  # a name imported from a module, not a module
            for attr in set(re.findall(rf"(?<![\w.]){re.escape(name)}\.(\w+)", code)):
                used.add((module, attr))
        used |= {("vitcls_utils.report.notebook", f"NotebookRun.{attr}")
                 for attr in re.findall(r"\bnb\.(\w+)\(", code)}
    readme = (ROOT / "README.md").read_text()
    return used | {("vitcls_utils", attr) for attr in re.findall(r"\bvu\.(\w+)\(", readme)}


def test_what_the_notebooks_call_documents_its_arguments_and_returns():
    """Google-style Args (where there are arguments) and Returns on every function, and Args on
    every class, that a notebook or the README calls."""
    import importlib
    import inspect

    undocumented = []
    for module, attr in sorted(notebook_api()):
        owner = importlib.import_module(module)
        for part in attr.split("."):
            owner = getattr(owner, part, None)
        if owner is None or not callable(owner):
            continue
        doc = inspect.getdoc(owner) or ""
        try:
            takes = [p for p in inspect.signature(owner).parameters if p != "self"]
        except (TypeError, ValueError):
            takes = []
        if (takes and "Args:" not in doc) or (not inspect.isclass(owner) and not any(
                section in doc for section in ("Returns:", "Yields:"))):
            undocumented.append(f"{module}.{attr}")
    assert len(notebook_api()) > 150  # the scan reads the notebooks
    assert not undocumented, undocumented
