"""The model-parameter randomisation check against hand computations (catalogue E17)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import tiny_model
from vitcls_utils.analysis import randomisation_check as rc
from vitcls_utils.base.errors import VitclsError


def test_a_randomised_copy_leaves_the_original_and_the_other_layers_untouched(weights_unchanged):
    model = tiny_model()
    check = weights_unchanged(model)
    assert rc.randomisable_layers(model) == ["head", "blocks.2", "blocks.1", "blocks.0",
                                            "patch_embed"]
    clone = rc.randomised_copy(model, ["blocks.2"], seed=1)
    check()
    original, changed = model.state_dict(), clone.state_dict()
    for key in original:
        same = torch.equal(original[key], changed[key])
        assert same != key.startswith("blocks.2."), key


def test_spearman_is_scipys_per_image_and_undefined_for_a_constant_map():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 9)), rng.random((5, 9))
    b[1] = a[1] * 3 + 1  # same ranking
    ours = rc.spearman(a, b)
    for i in range(5):
        assert ours[i] == pytest.approx(stats.spearmanr(a[i], b[i]).statistic)
    assert ours[1] == pytest.approx(1.0)
    assert np.isnan(rc.spearman(np.zeros((1, 4)), a[:1, :4]))[0]


def test_ssim_over_one_window_is_wang_et_als_formula_by_hand():
    rng = np.random.default_rng(0)
    a, b = rng.random((7, 7)), rng.random((7, 7))
    assert rc.ssim(a, a) == pytest.approx(1.0)
    x = (a - a.min()) / (a.max() - a.min())
    y = (b - b.min()) / (b.max() - b.min())
    cov = np.cov(x.ravel(), y.ravel())  # sample covariances, as the uniform window's
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = ((2 * x.mean() * y.mean() + c1) * (2 * cov[0, 1] + c2)
                / ((x.mean() ** 2 + y.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
    assert rc.ssim(a, b) == pytest.approx(expected)
    assert rc.ssim(a, 2 * a + 5) == pytest.approx(1.0)  # scale-free: min-max scaled first


def test_the_gradient_map_is_the_finite_difference_gradient_of_the_target_logit():
    model = tiny_model().double()
    image = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    label = torch.tensor([3])
    ours = rc.gradient_map(model, image, label)[0].numpy()
    eps = 1e-6
    for token in (0, 9):  # two patches, every pixel and channel of each bumped both ways
        row, col = divmod(token, 4)
        bumps = torch.zeros(3 * 64, 3, 32, 32, dtype=torch.float64)
        for k, (c, dy, dx) in enumerate(np.ndindex(3, 8, 8)):
            bumps[k, c, 8 * row + dy, 8 * col + dx] = eps
        with torch.no_grad():
            slope = (model(image + bumps)[:, 3] - model(image - bumps)[:, 3]) / (2 * eps)
        per_token = slope.reshape(3, 64).abs().sum(0).mean()
        assert ours[token] == pytest.approx(float(per_token), rel=1e-4)


def test_the_target_logit_gradient_passes_and_an_input_independent_map_fails(weights_unchanged):
    model = tiny_model()
    check = weights_unchanged(model)
    torch.manual_seed(0)
    images, labels = torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,))
    prior = torch.linspace(0, 1, 16)

    def fixed(m, x, y):
        return prior.expand(len(x), -1)

    gradient = rc.mprt(model, images, labels, rc.gradient_map)
    assert gradient.step.max() == 5 and len(gradient) == 5 * 12
    assert rc.mprt_verdict(gradient)["passes"]
    assert rc.mprt_verdict(gradient, "ssim")["passes"]
    constant = rc.mprt(model, images, labels, fixed, mode="independent")
    verdict = rc.mprt_verdict(constant)
    assert not verdict["passes"] and verdict["interval"].estimate == pytest.approx(1.0)
    smooth = rc.mprt(model, images[:4], labels[:4], rc.smoothed(rc.gradient_map, 2),
                     layers=["head"])
    assert smooth.spearman.notna().all()
    check()
    with pytest.raises(VitclsError, match="mode"):
        rc.mprt(model, images, labels, fixed, mode="sideways")


@pytest.mark.parametrize("mode", rc.MODES)
def test_each_step_reads_the_model_a_fresh_randomised_copy_would_be(mode, weights_unchanged):
    # one copy serves every step (randomised, then put back): each step's map must be the one
    # of a separate randomised_copy with that step's layers and seed, bit for bit
    model = tiny_model()
    check = weights_unchanged(model)
    torch.manual_seed(1)
    images, labels = torch.randn(3, 3, 32, 32), torch.randint(0, 10, (3,))
    layers = rc.randomisable_layers(model)
    original = rc.gradient_map(model, images, labels).double().numpy()
    frame = rc.mprt(model, images, labels, rc.gradient_map, mode=mode, seed=5)
    for step, layer in enumerate(layers, start=1):
        chosen = layers[:step] if mode == "cascading" else [layer]
        fresh = rc.randomised_copy(model, chosen, seed=5 + step)
        after = rc.gradient_map(fresh, images, labels).double().numpy()
        np.testing.assert_array_equal(frame[frame.step == step].spearman.to_numpy(),
                                      rc.spearman(original, after))
    check()
