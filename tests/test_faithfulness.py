"""The perturbation test's readouts against definitions computed another way (catalogue E15)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vitcls_utils.analysis import faithfulness
from vitcls_utils.report import vilas_tables


def curve(method, test, accuracy, n_image=10):
    kept = n_image - np.arange(1, len(accuracy) + 1)  # 10%, 20%, ... removed
    return pd.DataFrame({"method": method, "test": test, "kept": kept,
                         "removed": 1 - kept / n_image, "accuracy": accuracy})


def test_accuracy_kept_is_the_last_removal_before_the_first_drop():
    curves = curve("class_space", "negative", [0.9, 0.85, 0.8, 0.7, 0.3, 0.5])
    # removed 10%, 20%, ... ; baseline 0.8: kept while >= 0.8, i.e. up to 30% removed
    assert faithfulness.accuracy_kept(curves, 0.8) == pytest.approx(30.0)
    assert faithfulness.accuracy_kept(curves, 0.95) == 0.0
    assert faithfulness.accuracy_kept(curves, 0.1) == pytest.approx(60.0)


def test_baselines_are_the_unperturbed_accuracy_and_the_curves_first_point():
    curves = pd.concat([curve("class_space", "negative", [0.6, 0.5]),
                        curve("class_space", "positive", [0.4, 0.1])])
    lines = faithfulness.baselines(curves, 0.75)
    assert list(lines.values()) == [0.75, 0.6]  # most tokens kept, negative test


def test_auc_tests_pair_images_one_sided_as_scipy_does():
    rng = np.random.default_rng(0)
    n = 40
    ours_neg, rand_neg = rng.uniform(0.5, 1, n), rng.uniform(0, 0.6, n)
    ours_pos, rand_pos = rng.uniform(0, 0.5, n), rng.uniform(0.4, 1, n)
    scores = pd.concat([
        pd.DataFrame({"method": m, "test": t, "image": np.arange(n), "score": s})
        for m, t, s in (("class_space", "negative", ours_neg), ("random", "negative", rand_neg),
                        ("class_space", "positive", ours_pos), ("random", "positive", rand_pos))])
    table = faithfulness.auc_tests(scores).set_index("test")
    assert table.loc["negative", "p_value"] == pytest.approx(
        stats.wilcoxon(ours_neg, rand_neg, alternative="greater").pvalue)
    assert table.loc["positive", "p_value"] == pytest.approx(
        stats.wilcoxon(ours_pos, rand_pos, alternative="less").pvalue)
    assert table.significant.all()
    same = scores.assign(score=0.5)
    assert (faithfulness.auc_tests(same).p_value == 1.0).all()  # no evidence either way
    from vitcls_utils.base.uncertainty import bootstrap, paired_difference
    assert table.loc["negative", "difference from random [95% CI]"] == paired_difference(
        ours_neg, rand_neg).format(3)
    assert table.loc["negative", "mean score [95% CI]"] == bootstrap(ours_neg).format(3)
    assert table["CI excludes zero"].all()
    assert not faithfulness.auc_tests(same)["CI excludes zero"].any()


def test_paper_areas_sit_beside_each_order_and_test():
    areas = pd.DataFrame({"method": ["class_space", "gradient_rollout", "random", "probe"],
                          "test": ["negative", "negative", "positive", "negative"],
                          "AUC, authors' formula": [0.5, 0.6, 0.7, 0.8]})
    with_paper = vilas_tables.with_paper_areas(areas, "vit_b32")
    assert list(with_paper.columns) == ["method", "test", "AUC, authors' formula", "reported"]
    assert with_paper.reported.iloc[0] == pytest.approx(0.8363)  # reported.csv, A11 (ours)
    assert with_paper.reported.iloc[1] == pytest.approx(0.8454)  # Chefer et al.
    assert list(with_paper["AUC, authors' formula"]) == [0.5, 0.6, 0.7, 0.8]  # untouched
    beside_toy = vilas_tables.with_paper_areas(areas, "toy")  # the toy is set beside ViT-B/32
    assert beside_toy.reported.tolist() == with_paper.reported.tolist()


def test_the_normalized_area_is_the_mean_of_the_images_areas_and_has_their_interval(
        tiny_toy_variant):
    from vitcls_utils.analysis import explanation_maps as explain
    from vitcls_utils.base.uncertainty import bootstrap
    from vitcls_utils.datasets.kinds import ToyDataset
    from vitcls_utils.model.loading import load_variant

    outcomes = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=float)
    areas = faithfulness.image_areas(outcomes, [40, 20, 5], 49)
    assert areas.mean() == pytest.approx(
        faithfulness.normalized_auc(outcomes.mean(0), [40, 20, 5], 49))
    model = load_variant("test_tiny_toy", seed=1)
    dataset = ToyDataset("val", n_per_class=1)
    orders = {"random": explain.random_orders(49, [0])}
    _, table, _ = faithfulness.faithfulness_test(model, dataset, orders, counts=[1, 24, 48])
    loader = explain.stimulus_batches(model, dataset, 64)
    right = faithfulness.faithfulness_outcomes(
        model, loader, np.broadcast_to(orders["random"][0], (len(dataset), 49)), False,
        [1, 24, 48])
    expected = bootstrap(faithfulness.image_areas(right, [1, 24, 48], 49)).bounds(3)
    assert table.set_index("test").loc["negative", "normalized AUC, 95% CI"] == expected
