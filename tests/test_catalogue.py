"""Every experiment id (E1-E16), quirk id (B1-B22) and section (§1-§6) that the code, the
notebooks and the book cite resolves to the book's catalogue page, and nothing points at a
document outside the repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "book" / "catalogue.md"
CITED = re.compile(r"(?<![\w.#/-])(E1[0-6]|E[1-9][ab]?|B2[0-2]|B1[0-9]|B[1-9])(?![\w.])")
SECTION = re.compile(r"§\s?(\d+)")


def sources():
    for folder, patterns in (("vitcls_utils", ["*.py"]), ("notebooks", ["*.ipynb"]),
                             ("book", ["*.md"]), ("benchmarks", ["*.py", "*.md"]),
                             ("data", ["**/*.md", "**/*.csv"])):
        for pattern in patterns:
            yield from sorted((ROOT / folder).glob(pattern))
    yield ROOT / "README.md"


def defined():
    text = CATALOGUE.read_text()
    ids = {m.upper() for m in re.findall(r"^\(catalogue-([eb]\d+[ab]?)\)=", text, re.M)}
    sections = set(re.findall(r"^## §(\d+) ", text, re.M))
    return ids, sections


def test_catalogue_defines_every_experiment_quirk_and_section():
    ids, sections = defined()
    expected = {f"E{i}" for i in range(1, 17) if i != 5} | {"E5A", "E5B"}
    expected |= {f"B{i}" for i in range(1, 23)}
    assert expected <= ids, sorted(expected - ids)
    assert sections == {str(i) for i in range(1, 11)}


def test_every_reference_resolves_to_the_catalogue():
    ids, sections = defined()
    unresolved = []
    for path in sources():
        text = path.read_text(errors="replace")
        for match in CITED.finditer(text):
            if match.group(1).upper() not in ids:
                unresolved.append(f"{path.relative_to(ROOT)}: {match.group(1)}")
        for match in SECTION.finditer(text):
            if match.group(1) not in sections:
                unresolved.append(f"{path.relative_to(ROOT)}: §{match.group(1)}")
        assert "spec §" not in text and "shared/spec" not in text, \
            f"{path.relative_to(ROOT)} points at a document outside the repository"
    assert not unresolved, unresolved


@pytest.mark.parametrize("letter, count, prefix", [("V", 9, "vit_"), ("G", 12, "ghiasi_"),
                                                   ("C", 8, "convit_"), ("R", 5, "readout_")])
def test_related_chapters_cite_analyses_the_catalogue_defines(letter, count, prefix):
    """Chapter 5's notebooks cite V1-V9, chapter 6's G1-G12, chapter 7's C1-C8, chapter 8's
    R1-R5, each defined in the catalogue."""
    text = CATALOGUE.read_text()
    ids = set(re.findall(rf"^\(catalogue-({letter.lower()}\d+)\)=", text, re.M))
    assert ids == {f"{letter.lower()}{i}" for i in range(1, count + 1)}
    for notebook in sorted((ROOT / "notebooks").glob(f"{prefix}*.ipynb")):
        cited = {m.lower() for m in re.findall(rf"catalogue ({letter}\d+)", notebook.read_text())}
        assert cited and cited <= ids, f"{notebook.name} cites {cited or 'no analysis'}"


#: `name.attr` in the catalogue that are not modules: site names, instances, parameters
NOT_MODULES = {"attn", "mlp", "blocks", "fc2", "explorer", "model", "vitcls_utils"}
FILE_SUFFIXES = {"csv", "txt", "toml", "yml", "md", "json", "py", "npy", "tsv", "ipynb",
                 "safetensors", "pth", "xml"}
TIMM_NAME = re.compile(r"patch\d+|^(vit|deit|convit|resnet)_")


def package_modules() -> dict:
    """{basename: dotted module} of every module in the layer subpackages."""
    package = ROOT / "vitcls_utils"
    return {path.stem: ".".join(("vitcls_utils",) + path.relative_to(package).with_suffix("")
                                .parts)
            for path in package.glob("*/*.py") if path.stem != "__init__"}


def check_references(text: str) -> list:
    """`module.name` references of ``text`` that name no module of the package, or a name the
    module does not have."""
    import importlib

    modules, problems = package_modules(), []
    classes = {name for dotted in modules.values()
               for name in dir(importlib.import_module(dotted)) if name[:1].isupper()}
    for module, name in re.findall(r"`(\w+)\.(\w+)(?:\(|`)", text):
        if (module in NOT_MODULES or module in classes or name in FILE_SUFFIXES
                or TIMM_NAME.search(module)):
            continue  # `Variant.drop_prefixes`, `reported.csv`, `vit_base_patch16_224.augreg`
        if module == "vu":  # import vitcls_utils as vu
            if not hasattr(importlib.import_module("vitcls_utils"), name):
                problems.append(f"vu.{name}: vitcls_utils exports no {name!r}")
        elif module not in modules:
            problems.append(f"{module}.{name}: no module {module!r}")
        elif not hasattr(importlib.import_module(modules[module]), name):
            problems.append(f"{module}.{name}: {modules[module]} has no {name!r}")
    return problems


def test_a_module_name_that_does_not_exist_is_reported():
    assert check_references("`extraction.store_for`, `Variant.drop_prefixes`") == []
    assert check_references("`results.find_store`") == ["results.find_store: no module 'results'"]
    assert check_references("`extraction.nope`") == [
        "extraction.nope: vitcls_utils.stores.extraction has no 'nope'"]


def test_the_catalogue_names_functions_that_exist():
    text = CATALOGUE.read_text()
    missing = check_references(text)
    for page in ("reproducing.md", "method.md", "intro.md", "variants.md"):
        missing += check_references((ROOT / "book" / page).read_text())
    missing += check_references((ROOT / "README.md").read_text())
    assert not missing, missing
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    named = r"`((?:fig|tab|compare|vit_(?:fig|tab|bridge|fewshot)|ghiasi_(?:fig|tab|bridge))\w*)`"
    for name in re.findall(named, text):
        assert name in notebooks, f"the catalogue names a notebook that does not exist: {name}"
