"""The notebooks' setup call checks its parameters before any work."""
from __future__ import annotations

import pytest

from vitcls_utils import UnknownVariantError, VitclsError
from vitcls_utils.report import notebook as book


@pytest.mark.parametrize("parameters, message", [
    ({"n_per_class": -1}, "n_per_class must be an integer of at least 1"),
    ({"n_per_class": 0}, "n_per_class must be an integer of at least 1"),
    ({"seed": -2}, "seed must be an integer of at least 0"),
    ({"profile": "nope"}, "unknown profile"),
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


def test_the_cnn_beside_a_vit_is_random_beside_a_random_control():
    from vitcls_utils.report import notebook as book
    from vitcls_utils.base.errors import VitclsError

    assert book.setup("toy").baseline_key() == "toy_cnn"
    assert book.setup("toy_random").baseline_key("resnet152_tv") == "resnet152_tv_random"
    assert book.setup("ghiasi_b16_384", dataset="imagenet-s").baseline_key() == "resnet50_tv"
    with pytest.raises(VitclsError, match="is a ViT"):
        book.setup("toy").baseline_key("toy_gap")
    models = book.setup("toy", device="cpu").models_beside()
    assert list(models) == ["Toy ViT (CLS)", "Toy CNN (ResNet)"]
