"""The faithfulness suite's criteria against hand computations and a second implementation
(catalogue E17)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import tiny_model
from vitcls_utils.analysis import faithfulness_suite as suite
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.base.uncertainty import paired_difference


def test_orders_rank_highest_first_and_break_ties_at_random_not_in_raster_order():
    scores = np.array([[0.1, 0.9, 0.5, 0.3]])
    assert suite.token_orders(scores).tolist() == [[1, 2, 3, 0]]
    constant = np.zeros((20, 16))
    orders = suite.token_orders(constant, seed=3)
    assert all(sorted(o) == list(range(16)) for o in orders)
    assert not (orders == np.arange(16)).all(axis=1).any()  # never the raster order
    assert np.array_equal(orders, suite.token_orders(constant, seed=3))  # seeded


def test_a_removed_token_covers_exactly_its_patch():
    mask = suite.token_masks(np.array([[1, 0, 2, 3]]), 1)  # token 1 is the most relevant
    assert mask.tolist() == [[False, True, False, False]]
    assert suite.token_masks(np.array([[1, 0, 2, 3]]), 1, most_first=False).tolist() == [
        [False, False, False, True]]
    pixels = suite.pixel_masks(mask, (2, 2), (4, 4))[0, 0].numpy()
    expected = np.zeros((4, 4), dtype=bool)
    expected[0:2, 2:4] = True  # row-major grid: token 1 is the top-right patch
    assert np.array_equal(pixels, expected)
    with pytest.raises(VitclsError, match="patch grid"):
        suite.pixel_masks(mask, (2, 2), (5, 4))


def test_imputation_is_the_weighted_mean_of_the_neighbours_by_hand():
    image = np.arange(9, dtype=float).reshape(1, 3, 3) ** 2
    removed = np.zeros((3, 3), dtype=bool)
    removed[1, 1] = True
    out = suite.noisy_linear_impute(image, removed, noise=0.0)
    x = image[0]
    direct = x[0, 1] + x[1, 0] + x[1, 2] + x[2, 1]
    diagonal = x[0, 0] + x[0, 2] + x[2, 0] + x[2, 2]
    assert out[0, 1, 1] == pytest.approx(direct / 6 + diagonal / 12)
    assert np.array_equal(out[0][~removed], image[0][~removed])  # known pixels untouched
    corner = np.zeros((3, 3), dtype=bool)
    corner[0, 0] = True  # at the border the weights are renormalised
    out = suite.noisy_linear_impute(image, corner, noise=0.0)
    assert out[0, 0, 0] == pytest.approx((x[0, 1] / 6 + x[1, 0] / 6 + x[1, 1] / 12) / (5 / 12))


def test_imputation_of_a_removed_block_reproduces_a_plane_and_adds_the_stated_noise():
    ys, xs = np.mgrid[0:12, 0:12]
    plane = np.stack([2.0 * ys - 3.0 * xs + 1, 0.5 * xs])
    removed = np.zeros((12, 12), dtype=bool)
    removed[3:9, 2:10] = True  # unknowns next to unknowns: one linear system
    out = suite.noisy_linear_impute(plane, removed, noise=0.0)
    np.testing.assert_allclose(out, plane, atol=1e-9)
    noisy = suite.noisy_linear_impute(plane, removed, noise=0.5, rng=np.random.default_rng(1))
    assert np.std((noisy - plane)[:, removed]) == pytest.approx(0.5, rel=0.15)
    with pytest.raises(VitclsError, match="every pixel"):
        suite.noisy_linear_impute(plane, np.ones((12, 12), dtype=bool))


def test_road_levels_span_ten_to_ninety_percent():
    assert suite.road_levels() == pytest.approx(suite.ROAD_LEVELS)
    assert suite.road_levels(5) == pytest.approx((0.1, 0.3, 0.5, 0.7, 0.9))
    with pytest.raises(VitclsError, match="at least one"):
        suite.road_levels(0)


def test_areas_are_trapezoids_on_the_fraction_axis():
    curves = np.array([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
    assert suite.curve_area(curves, [0, 0.5, 1]).tolist() == pytest.approx([0.5, 1.0])
    assert suite.curve_area(np.array([[0.2, 0.4]]), [0.1, 0.9])[0] == pytest.approx(0.3)


def test_blur_is_scipys_gaussian_filter_with_the_same_radius():
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    ours = suite.blurred(images, sigma=1.25).numpy()
    theirs = ndimage.gaussian_filter(images.numpy(), sigma=(0, 0, 1.25, 1.25), mode="mirror",
                                     truncate=3 / 1.25)
    np.testing.assert_allclose(ours, theirs, atol=1e-10)


def images_and_labels(n=16, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))


def test_curves_start_at_the_image_and_end_at_the_replacement():
    model = tiny_model()
    images, labels = images_and_labels(6)
    orders = suite.token_orders(np.random.default_rng(0).random((6, 16)))
    other = torch.zeros_like(images)
    curve = suite.replacement_curve(model, images, other, labels, orders, [0, 8, 16])
    np.testing.assert_allclose(curve[:, 0], suite.target_probability(model, images, labels),
                               rtol=1e-5)
    np.testing.assert_allclose(curve[:, 2], suite.target_probability(model, other, labels),
                               rtol=1e-5)
    with pytest.raises(VitclsError, match="image tokens"):
        suite.suite_curves(model, images, labels, np.zeros((6, 5)))


def test_road_on_a_constant_map_equals_road_on_a_random_map_within_the_interval():
    model = tiny_model()
    images, labels = images_and_labels(24)
    levels = (0.25, 0.5, 0.75)
    scores = {}
    for name, maps in (("constant", np.zeros((24, 16))),
                       ("random", suite.random_maps(24, 16, seed=5))):
        orders = suite.token_orders(maps, seed=1)
        scores[name] = suite.road_curve(model, images, labels, orders, levels).mean(1)
    difference = paired_difference(scores["constant"], scores["random"], seed=0)
    assert difference.low <= 0 <= difference.high, difference
    assert difference.n == 24 and not np.allclose(scores["constant"], scores["random"])


def test_the_suite_scores_every_criterion_per_image():
    model = tiny_model()
    images, labels = images_and_labels(4)
    curves, scores = suite.faithfulness_suite(
        model, images, labels, {"random": suite.random_maps(4, 16)}, n_steps=4,
        levels=(0.5,))
    assert set(scores.criterion) == set(suite.BETTER)
    assert len(scores) == 4 * len(suite.BETTER)
    assert scores.value.between(0, 1).all()
    morf = curves[(curves.curve == "MoRF") & (curves.image == 0)]
    assert morf.fraction.tolist() == [0, 0.25, 0.5, 0.75, 1.0]


def test_the_curves_ends_are_shared_between_maps_and_equal_computed_ones(monkeypatch):
    model = tiny_model()
    images, labels = images_and_labels(3)
    maps = {"a": suite.random_maps(3, 16, 1), "b": suite.random_maps(3, 16, 2)}
    fresh = [suite.suite_curves(model, images, labels, m, n_steps=2, levels=(0.5,))
             for m in maps.values()]
    calls = []
    original = suite.target_probability
    monkeypatch.setattr(suite, "target_probability",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    curves, _ = suite.faithfulness_suite(model, images, labels, maps, n_steps=2, levels=(0.5,))
    # per map: 4 curves x 1 middle point + ROAD 2 x 1; the ends (image, noise, mean colour,
    # blurred) once for both maps
    assert len(calls) == 2 * (4 + 2) + 4
    for method, expected in zip(maps, fresh, strict=True):
        for name, (_, values) in expected.items():
            got = curves[(curves.method == method) & (curves.curve == name)]
            np.testing.assert_allclose(got.probability.to_numpy(), values.ravel(), rtol=1e-6)
