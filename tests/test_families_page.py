"""The book's families table is generated from the adapters and covers what the tests check."""
from __future__ import annotations

from vitcls_utils.base.paths import ROOT
from vitcls_utils.model.families import FAMILIES, VERIFIED_ON
from vitcls_utils.report import families_page

from test_families import CASES, SWIN


def test_the_committed_table_is_the_generated_one():
    committed = (ROOT / "book" / "generated" / "families_table.md").read_text()
    assert committed == families_page.render(), \
        "regenerate: python -m vitcls_utils.report.families_page > book/generated/families_table.md"


def test_every_family_has_a_row_and_every_verified_model_is_tested():
    text = families_page.render()
    assert all(f"| `{name}` |" in text for name in FAMILIES)
    tested = {name for name, _, _ in CASES.values()} | {SWIN[0]}
    for family, models in VERIFIED_ON.items():
        assert set(models) <= tested, (family, set(models) - tested)
        assert {CASES[c][2] for c in CASES if CASES[c][0] in models} <= {family}
