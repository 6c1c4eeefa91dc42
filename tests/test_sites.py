"""One resolver of site kinds: short and full names agree, and positions match a second,
string-splitting reading of the site list."""
from __future__ import annotations

import pytest

from vitcls_utils import VitclsError
from vitcls_utils.base.sites import BLOCK_SITES, positions_of_kind, site_kind

SITES = [f"blocks.{b}.{kind}" for b in range(3) for kind in BLOCK_SITES]


@pytest.mark.parametrize("full", BLOCK_SITES)
def test_short_and_full_kinds_find_the_same_sites(full):
    short = full.split(".")[-1].removeprefix("hook_")
    expected = [i for i, name in enumerate(SITES) if name.split(".", 2)[2] == full]
    assert len(expected) == 3
    assert positions_of_kind(SITES, full) == expected
    if short not in ("pre", "post"):  # "pre"/"post" alone are the MLP's
        assert site_kind(short) == full
        assert positions_of_kind(SITES, short) == expected


def test_unknown_kinds_name_the_known_ones():
    with pytest.raises(VitclsError, match="hook_resid_post"):
        site_kind("residual")
