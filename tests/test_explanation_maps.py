"""Explanation maps against finite differences and hand-computed rollouts; the perturbation
test against the clean accuracy; the two areas by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model

from vitcls_utils.analysis import explanation_maps as explain, faithfulness
from vitcls_utils.model.hooks import capture, hooks
from vitcls_utils.model.projection import ClassProjector


def block_loss(model, images, classes, block, paper, nudge=None):
    """l_b of the class-space maps, optionally with A_b[img, h, 0, j] += eps."""
    site = f"blocks.{block}.hook_attn_out" if paper else f"blocks.{block}.hook_resid_post"

    def edit(pattern, name):
        if nudge is None:
            return None
        (img, head, key), eps = nudge
        pattern = pattern.clone()
        pattern[img, head, 0, key] += eps
        return pattern

    with torch.no_grad(), hooks(model, [(f"blocks.{block}.attn.hook_pattern", edit)]), \
            capture(model, site) as cache:
        model(images)
    logits = ClassProjector(model)(cache[site][:, 0]).double()
    if paper:
        logits = logits.softmax(-1)
    return torch.nn.functional.cross_entropy(logits, classes, reduction="none")


@pytest.mark.parametrize("paper", [False, True])
def test_class_space_maps_equal_finite_differences(paper):
    model = tiny_model("cls")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([3, 7])
    maps = explain.class_space_maps(model, images, classes, paper=paper)
    assert maps.shape == (2, 3, 2, 16)
    eps = 1e-2
    for img, block, head, key in [(0, 0, 1, 4), (1, 2, 0, 9), (0, 1, 1, 15)]:
        plus = block_loss(model, images, classes, block, paper, ((img, head, key), eps))
        minus = block_loss(model, images, classes, block, paper, ((img, head, key), -eps))
        estimate = -(plus[img] - minus[img]) / (2 * eps)
        assert maps[img, block, head, key - 1].item() == pytest.approx(estimate.item(),
                                                                         rel=2e-2, abs=1e-5)


def test_rollout_equals_a_hand_computed_chain():
    model = tiny_model("reg_tokens", depth=2)  # 3 prefix tokens: [CLS] + 2 registers
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), capture(model, lambda n: n.endswith("hook_pattern")) as cache:
        model(images)
    a0 = cache["blocks.0.attn.hook_pattern"].mean(1).numpy()
    a1 = cache["blocks.1.attn.hook_pattern"].mean(1).numpy()
    eye = np.eye(a0.shape[-1])
    step = lambda a: (0.5 * a + 0.5 * eye) / (0.5 * a + 0.5 * eye).sum(-1, keepdims=True)  # noqa: E731
    chain = step(a1) @ step(a0)
    got = explain.rollout_maps(model, images).numpy()
    assert got.shape == (2, 16)
    assert np.allclose(got, chain[:, 0, 3:], atol=1e-6)
    raw = explain.attention_maps(model, images).numpy()
    assert np.allclose(raw, a1[:, 0, 3:], atol=1e-7)


def test_gradient_rollout_one_block_by_hand():
    model = tiny_model("cls", depth=1)
    images = torch.randn(2, 3, 32, 32)
    classes = torch.tensor([1, 2])
    logits, patterns, _ = explain._forward_with_patterns(model, images)
    grad, = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), patterns)
    weighted = (grad * patterns[0]).clamp(min=0).mean(1)
    expected = (torch.eye(17) + weighted)[:, 0, 1:]
    assert torch.allclose(explain.gradient_rollout_maps(model, images, classes), expected)


def test_perturbation_curve_keeping_every_token_is_the_clean_accuracy():
    model = tiny_model("cls")
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(6, 3, 32, 32, generator=gen)
    with torch.no_grad():
        pred = model(images).argmax(-1)
    labels = torch.where(torch.arange(6) < 4, pred, (pred + 1) % 10)  # 4 of 6 right

    def loader():
        yield images[:4], labels[:4], np.arange(4)
        yield images[4:], labels[4:], np.arange(4, 6)

    orders = np.stack([np.random.default_rng(i).permutation(16) for i in range(6)])
    full = faithfulness.faithfulness_curve(model, loader, orders, counts=[16])
    assert full[0] == pytest.approx(4 / 6)
    curve = faithfulness.faithfulness_curve(model, loader, orders)
    assert curve.shape == (15,)
    maps = explain.maps_for("class_space", model, images, labels)
    assert maps.shape == (6, 16)


def test_areas():
    accuracy = np.array([0.2, 0.4, 0.8, 0.8])
    assert faithfulness.paper_auc(accuracy) == pytest.approx(2.2 / (0.8 * 5))
    assert faithfulness.normalized_auc(np.full(4, 0.5), [1, 2, 3, 4], 5) == pytest.approx(0.5)
    with pytest.raises(Exception, match="unknown explanation method"):
        explain.maps_for("lrp", tiny_model("cls"), torch.randn(1, 3, 32, 32), torch.tensor([0]))


def test_random_orders_are_the_authors_draws():
    orders = explain.random_orders(49, range(3))
    for seed, order in enumerate(orders):
        torch.manual_seed(seed)
        assert np.array_equal(order, torch.randperm(49).numpy())
    assert not np.array_equal(orders[0], orders[1])


def test_cached_curves_equal_computed_ones_and_are_reused(tiny_toy_variant, tmp_path,
                                                          monkeypatch):
    from vitcls_utils.datasets.kinds import ToyDataset
    from vitcls_utils.model.loading import load_variant

    model = load_variant("test_tiny_toy", seed=1)
    dataset = ToyDataset("val", n_per_class=1)
    order = np.stack([np.random.default_rng(i).permutation(49) for i in range(len(dataset))])
    orders = {"some": order, "random": explain.random_orders(49, [0, 1])}
    counts = [1, 10, 30, 48]
    plain, plain_areas, plain_scores = faithfulness.faithfulness_test(model, dataset, orders,
                                                                 counts=counts)
    cached, _, _ = faithfulness.faithfulness_test(model, dataset, orders, counts=counts,
                                             cache_dir=tmp_path)
    assert np.array_equal(plain.accuracy, cached.accuracy)
    assert len(list(tmp_path.glob("*.npy"))) == 2 * 3  # (one + two random orders) x two tests

    def no_recompute(*args, **kwargs):
        raise AssertionError("a cached curve was recomputed")

    monkeypatch.setattr(faithfulness, "faithfulness_outcomes", no_recompute)
    again, areas, scores = faithfulness.faithfulness_test(model, dataset, orders, counts=counts,
                                                     cache_dir=tmp_path)
    assert np.array_equal(plain.accuracy, again.accuracy)
    assert areas.equals(plain_areas) and scores.equals(plain_scores)
    # an image's score is its share of the curve; the scores average to the curve's mean
    for (method, test), group in scores.groupby(["method", "test"]):
        curve = plain[(plain.method == method) & (plain.test == test)].accuracy
        assert group.score.mean() == pytest.approx(curve.mean())
    with pytest.raises(AssertionError, match="recomputed"):  # another order is another curve
        faithfulness.faithfulness_test(model, dataset, {"other": order[:, ::-1].copy()},
                                  counts=counts, cache_dir=tmp_path)


def test_mass_on_the_object_keeps_each_images_share_counted_by_hand():
    maps = np.array([[1.0, -2.0, 3.0, 0.0], [0.5, 0.5, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    token_class = np.array([[-1, 1, 0, 0, 1], [-1, 0, 0, 1, 1], [-1, -1, -1, -1, -1]])
    out = explain.mass_on_object(maps, token_class, num_prefix=1)
    # image 1: positive mass 4, on the object 1; image 2: 2 and 1; image 3 has no mask
    np.testing.assert_allclose(out["mass_images"], [0.25, 0.5])
    np.testing.assert_allclose(out["share_images"], [0.5, 0.5])
    assert out["map mass on the object"] == out["mass_images"].mean() == 0.375
    assert out["object share of tokens"] == 0.5
