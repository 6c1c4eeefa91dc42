"""The book's models page, generated from the registry by ``report/models_page``: every model
once, in compact tables a phone can show, with its details folded under its family, and the
committed page the one the generator writes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from vitcls_utils.model import registry
from vitcls_utils.report import models_page

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "generated" / "variants_table.md"


def table_rows(text: str) -> list:
    """The cells of every body row of the page's tables."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| key |"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_every_model_is_one_row_of_one_compact_table():
    text = models_page.render()
    rows = table_rows(text)
    keys = [row[0].strip("`") for row in rows]
    expected = [v.key for v in registry.list_variants(include_random=False)]
    assert sorted(keys) == sorted(expected)
    assert len(keys) == len(set(keys))
    assert all(len(row) == len(models_page.HEADER) for row in rows)
    assert text.count("| key | paper name | classes | tokens |") == len(models_page.groups())


def test_the_tables_are_narrow_enough_for_a_phone():
    """Four short columns: the widest row's text stays under 60 characters (a 390-px screen
    shows about that many at the tables' size; the browser test measures the real width)."""
    for row in table_rows(models_page.render()):
        assert len("".join(cell.strip("`") for cell in row)) <= 60, row


def test_the_families_follow_the_chapters_and_hold_what_the_registry_says():
    groups = dict(models_page.groups())
    headings = list(groups)
    assert headings[0].startswith("Chapters 1–4") and "toy" in headings[-1]
    first = [v.key for v in groups[headings[0]]]
    assert first == list(registry.PAPER_KEYS)
    assert all(v.dataset == "toy" for v in groups[headings[-1]])
    assert not any(v.random for models in groups.values() for v in models)


def test_the_details_name_the_timm_tag_weights_and_preprocessing_of_every_model():
    text = models_page.render()
    for variant in registry.list_variants(include_random=False):
        item = re.search(rf"^- \*\*`{re.escape(variant.key)}`\*\* .*$", text, re.M)
        assert item, variant.key
        assert f"`{variant.timm_name}`" in item.group(0)
        assert variant.preprocess.describe() in text
        if variant.weights == "url":
            assert variant.weights_url in item.group(0)
    # the details sit in one folded dropdown per family
    assert text.count(":::{dropdown}") == len(models_page.groups())
    assert text.count("\n:::\n") == len(models_page.groups())


def test_a_model_without_head_or_tokens_says_so():
    rows = {row[0].strip("`"): row for row in table_rows(models_page.render())}
    headless = next(v for v in registry.list_variants(False) if not v.has_head)
    assert rows[headless.key][2] == "no head"
    cnn = next(v for v in registry.list_variants(False) if v.n_tokens == 0)
    assert rows[cnn.key][3] == "–"


def test_the_controls_are_stated_once_not_listed():
    text = models_page.render()
    assert "`<key>_random`" in text and "These have none" not in text
    assert "_random`" not in text.replace("`<key>_random`", "")


def test_the_committed_page_is_what_the_generator_writes():
    run = subprocess.run([sys.executable, "-m", "vitcls_utils.report.models_page"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert run.stdout == models_page.render()
    assert PAGE.read_text() == run.stdout, \
        "regenerate: python -m vitcls_utils.report.models_page > book/generated/variants_table.md"


def test_make_book_regenerates_it():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nbook:", 1)[1].split("\n\n", 1)[0]
    assert "-m vitcls_utils.report.models_page > book/generated/variants_table.md" in recipe
