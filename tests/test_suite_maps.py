"""The suite's sample and maps: the same maps as chapter 4's methods, the probe's order as
scores (catalogue E17)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitcls_utils.analysis import explanation_maps, probing, suite_maps
from vitcls_utils.analysis.faithfulness_suite import token_orders
from vitcls_utils.base.errors import VitclsError


def test_the_sample_spreads_over_the_dataset_and_maps_are_the_methods_own(tiny_toy_variant):
    from vitcls_utils.datasets.kinds import ToyDataset
    from vitcls_utils.model.loading import load_variant

    model = load_variant("test_tiny_toy", seed=1)
    dataset = ToyDataset("val", n_per_class=1)
    images, labels, positions = suite_maps.sample_images(model, dataset, 5)
    assert positions.tolist() == [0, 6, 12, 17, 23]  # evenly over 24 images, one per class
    assert labels.tolist() == [dataset.labels[p] for p in positions]
    maps = suite_maps.method_maps(model, images, labels, ("class_space", "rollout"),
                                  batch_size=2)
    assert list(maps) == ["class_space", "rollout", "random"]
    expected = explanation_maps.maps_for("class_space", model, images, labels, paper=True)
    np.testing.assert_allclose(maps["class_space"], expected.double().numpy(), rtol=1e-5,
                               atol=1e-7)
    assert maps["random"].shape == (5, 49)
    again = suite_maps.map_function("random")(model, images, labels).numpy()
    assert np.array_equal(again, maps["random"])  # the random map ignores the model
    with pytest.raises(VitclsError, match="at least 2"):
        suite_maps.sample_images(model, dataset, 1)


class FakeProbe:
    num_prefix = 1

    def __init__(self, rank):
        self.rank = rank

    def by_block(self, what, kind):
        assert (what, kind) == ("rank", "resid_post")
        return self.rank


def test_probe_maps_rank_tokens_as_the_probe_test_orders_them():
    rng = np.random.default_rng(0)
    rank = rng.permutation(3 * 2 * 11).reshape(3, 2, 11)  # [images, blocks, prefix + 10]
    probe = FakeProbe(rank)
    scores = suite_maps.probe_maps(probe, np.array([2, 0]))
    assert scores.shape == (2, 10)
    reference = probing.probe_orders(probe)
    assert np.array_equal(token_orders(scores), reference[[2, 0]])
