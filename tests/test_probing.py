"""Closed-form probes against direct primal and dual solves, and the streaming sums against
features captured whole."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitcls_utils.analysis import probing
from vitcls_utils.datasets.kinds import ImageFolderDataset, load_image
from vitcls_utils.model.hooks import run_with_cache
from vitcls_utils.model.loading import load_variant


def sums_of(X, labels, classes):
    """Sums of one site and token, shaped [1, 1, ...] as fit_probes accumulates them."""
    X = torch.as_tensor(X, dtype=torch.float64)
    class_x = torch.zeros(classes, X.shape[1], dtype=torch.float64)
    class_x.index_add_(0, torch.as_tensor(labels), X)
    return probing.Sums(len(X), X.sum(0)[None, None], (X.T @ X)[None, None],
                        class_x[None, None], torch.bincount(torch.as_tensor(labels),
                                                            minlength=classes).double())


def targets(labels, classes):
    return 2 * np.eye(classes)[labels] - 1


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 5)) * [1, 2, 3, 0.5, 4] + [1, -2, 0, 3, 0.5]
    labels = np.arange(12) % 3
    return X, labels


def test_ridge_equals_primal_and_dual_solves_with_centering(data):
    X, labels = data
    Y = targets(labels, 3)
    weight, bias, _, _ = probing.solve(sums_of(X, labels, 3), "ridge", alpha=1.0)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    primal = np.linalg.solve(Xc.T @ Xc + np.eye(5), Xc.T @ Yc)
    dual = Xc.T @ np.linalg.solve(Xc @ Xc.T + np.eye(12), Yc)
    assert np.allclose(primal, dual)
    assert np.allclose(weight[0, 0].numpy(), primal)
    assert np.allclose(bias[0, 0].numpy(), Y.mean(0) - X.mean(0) @ primal)


def test_lsr_equals_the_vit_papers_solve(data):
    X, labels = data
    Y = targets(labels, 3)
    weight, bias, mean, scale = probing.solve(sums_of(X, labels, 3), "lsr")
    Xs = np.c_[(X - X.mean(0)) / (X.std(0) + 1e-5), np.full(12, 100.0)]
    primal = np.linalg.solve(Xs.T @ Xs + 1024 * np.eye(6), Xs.T @ Y)
    dual = Xs.T @ np.linalg.solve(Xs @ Xs.T + 1024 * np.eye(12), Y)
    assert np.allclose(primal, dual)
    assert np.allclose(weight[0, 0].numpy(), primal[:5], atol=1e-10)
    assert np.allclose(bias[0, 0].numpy(), 100 * primal[5], atol=1e-10)
    assert np.allclose(scale[0, 0].numpy(), X.std(0) + 1e-5)
    with pytest.raises(Exception, match="probe method"):
        probing.solve(sums_of(X, labels, 3), "svm")


def test_streaming_fit_equals_a_solve_on_captured_features(tiny_variant, image_folder):
    model = load_variant("test_tiny", seed=2)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    probes = probing.fit_probes(model, dataset, kinds=("resid_post", "mlp_out"), batch_size=4)
    assert probes.weight.shape == (6, 17, 32, 10)
    preprocess = model.vitcls_info.variant.preprocess
    images = torch.stack([preprocess(load_image(item.path)[0]) for item in dataset.items])
    _, cache = run_with_cache(model, images, ["blocks.1.hook_mlp_out"])
    X = cache["blocks.1.hook_mlp_out"][:, 5].double().numpy()  # token 5 of block 2's MLP
    Y = targets(np.asarray(dataset.labels), 10)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    expected = np.linalg.solve(Xc.T @ Xc + np.eye(32), Xc.T @ Yc)
    site = probes.sites.index("blocks.1.hook_mlp_out")
    assert np.allclose(probes.weight[site, 5].numpy(), expected, atol=1e-8)

    results = probing.evaluate_probes(model, probes, dataset, batch_size=4)
    scores = X @ expected + (Y.mean(0) - X.mean(0) @ expected)
    true = scores[np.arange(9), dataset.labels]
    assert np.array_equal(results.rank[:, site, 5], (scores > true[:, None]).sum(1))
    assert np.array_equal(results.top1[:, site, 5], scores.argmax(1))
    order = probing.probe_orders(results)
    assert order.shape == (9, 16) and sorted(order[0]) == list(range(16))


def test_site_groups_give_the_same_results(tiny_variant, image_folder):
    model = load_variant("test_tiny", seed=2)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    for solver, n_train in (("primal", None), ("dual", len(dataset))):
        whole = probing.probe_results(model, dataset, dataset, batch_size=4, solver=solver)
        per_site = probing.bytes_per_site(model, n_train) / 2 ** 30
        grouped = probing.probe_results(model, dataset, dataset, batch_size=4, solver=solver,
                                        memory_gb=2.5 * per_site)  # groups of 2 sites
        assert whole.rank.shape == (9, 9, 17)
        assert np.array_equal(whole.rank, grouped.rank)
        assert np.array_equal(whole.top1, grouped.top1)


@pytest.mark.parametrize("method", ["ridge", "lsr"])
def test_dual_solve_scores_equal_the_primal_solve(data, method):
    X, labels = data
    X = X[:4]  # fewer images than features: the dual's case
    weight, bias, mean, scale = probing.solve(sums_of(X, labels[:4], 3), method)
    dual = probing.solve_dual(torch.as_tensor(X)[:, None], torch.as_tensor(labels[:4]), 3,
                              method)
    test = torch.as_tensor(np.random.default_rng(1).normal(size=(7, 1, 5)))
    primal_scores = ((test - mean[0]) / scale[0]) @ weight[0, 0] + bias[0]
    assert torch.allclose(dual.logits(0, test).double(), primal_scores.float().double(),
                          atol=1e-5)


def test_dual_probes_rank_like_the_primal_ones(tiny_variant, image_folder):
    model = load_variant("test_tiny", seed=2)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    assert probing.pick_solver(model, len(dataset)) == "dual"  # 9 images < width 32
    for method in ("ridge", "lsr"):
        primal = probing.probe_results(model, dataset, dataset, batch_size=4, method=method,
                                       solver="primal")
        dual = probing.probe_results(model, dataset, dataset, batch_size=4, method=method)
        assert np.array_equal(primal.top1, dual.top1)
        assert np.array_equal(primal.rank, dual.rank)
    with pytest.raises(Exception, match="solver"):
        probing.probe_results(model, dataset, dataset, solver="qr")


def test_probe_table_per_image_accuracies_by_loops():
    rng = np.random.default_rng(1)
    sites = [f"blocks.{b}.hook_resid_post" for b in range(2)]
    probe = probing.ProbeResults(sites, np.zeros(4), rng.integers(0, 3, (4, 2, 6)), None, 1)
    projection = probing.ProbeResults(sites, np.zeros(4), rng.integers(0, 3, (4, 2, 6)), None, 1)
    table = probing.probe_table(probe, projection, ("resid_post",))
    for row in table.itertuples():
        for reader, ranks, accuracy in (("linear probe, images", probe.rank, row[3]),
                                        ("class projection, images", projection.rank, row[4])):
            by_hand = [np.mean([ranks[i, row.block - 1, t] == 0 for t in range(1, 6)])
                       for i in range(4)]
            assert table[reader][row.Index] == pytest.approx(by_hand)
            assert accuracy == pytest.approx(np.mean(by_hand))
