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
    assert sections == {str(i) for i in range(1, 10)}


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


@pytest.mark.parametrize("letter, count, prefix", [("V", 8, "vit_"), ("G", 11, "ghiasi_"),
                                                   ("C", 7, "convit_")])
def test_related_chapters_cite_analyses_the_catalogue_defines(letter, count, prefix):
    """Chapter 5's notebooks cite V1-V8, chapter 6's G1-G11, chapter 7's C1-C7, each defined in
    the catalogue."""
    text = CATALOGUE.read_text()
    ids = set(re.findall(rf"^\(catalogue-({letter.lower()}\d+)\)=", text, re.M))
    assert ids == {f"{letter.lower()}{i}" for i in range(1, count + 1)}
    for notebook in sorted((ROOT / "notebooks").glob(f"{prefix}*.ipynb")):
        cited = {m.lower() for m in re.findall(rf"catalogue ({letter}\d+)", notebook.read_text())}
        assert cited and cited <= ids, f"{notebook.name} cites {cited or 'no analysis'}"


def test_the_catalogue_names_functions_that_exist():
    import importlib

    text = CATALOGUE.read_text()
    missing = []
    for module, name in re.findall(r"`(\w+)\.(\w+)(?:\(|`)", text):
        try:
            mod = importlib.import_module(f"vitcls_utils.{module}")
        except ModuleNotFoundError:
            continue  # `Variant.drop_prefixes` and other attributes of classes
        if not hasattr(mod, name):
            missing.append(f"{module}.{name}")
    assert not missing, missing
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    named = r"`((?:fig|tab|compare|vit_(?:fig|tab|bridge|fewshot)|ghiasi_(?:fig|tab|bridge))\w*)`"
    for name in re.findall(named, text):
        assert name in notebooks, f"the catalogue names a notebook that does not exist: {name}"
