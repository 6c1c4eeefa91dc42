"""The notebooks' setup call checks its parameters before any work."""
from __future__ import annotations

import pytest

from vitcls_utils import UnknownVariantError, VitclsError, book


@pytest.mark.parametrize("parameters, message", [
    ({"n_per_class": -1}, "n_per_class must be an integer of at least 1"),
    ({"n_per_class": 0}, "n_per_class must be an integer of at least 1"),
    ({"seed": -2}, "seed must be an integer of at least 0"),
    ({"profile": "authors"}, "profile"),
])
def test_bad_parameters_fail_at_setup(parameters, message):
    with pytest.raises(VitclsError, match=message):
        book.setup("toy", **parameters)


def test_unknown_variant_and_bad_settings():
    with pytest.raises(UnknownVariantError):
        book.setup("vit_b99")
    run = book.setup("toy", profile="paper")
    assert run.setting("n_random") == 10  # the paper's random orders
    assert run.setting("n_random", 3) == 3
    with pytest.raises(VitclsError, match="n_random must be a positive"):
        run.setting("n_random", 0)
