"""Chapters 1-2's tables with their intervals, against the intervals computed directly."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import memory_store

from vitcls_utils.analysis import context
from vitcls_utils.base.uncertainty import Interval, bootstrap, bootstrap_ratio, paired_difference
from vitcls_utils.report import vilas_tables


def test_an_interval_is_shown_with_its_excluded_images():
    assert vilas_tables.interval_text(Interval(0.5, 0.25, 0.75, 10)) == "[0.25, 0.75]"
    assert vilas_tables.interval_text(Interval(0.5, 0.25, 0.75, 10, 2)) == \
        "[0.25, 0.75] (2 excluded)"
    assert vilas_tables.interval_text(Interval(np.nan, np.nan, np.nan, 0, 3)) == "–"


def store(seed, n=15):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    return memory_store(rng.integers(0, 2, (n, 2, 6)), labels=labels,
                        pred=np.where(rng.random(n) < 0.6, labels, (labels + 1) % 10))


def test_table_1_intervals_pair_the_run_with_its_control_on_the_same_images():
    trained, control = store(0), store(1)
    metrics = ["identifiability_rate", "top1_accuracy"]
    table = vilas_tables.headline_intervals_table(trained, control, metrics)
    per_image = 100 * (trained.rank[:, -1, 1:] == 0).mean(1)  # [CLS] left out (B4)
    assert table.loc[0, "95% CI"] == vilas_tables.interval_text(bootstrap(per_image))
    theirs = 100 * (control.rank[:, -1, 1:] == 0).mean(1)
    assert table.loc[0, "trained − random init [95% CI]"] == paired_difference(
        per_image, theirs).format(2)
    same = vilas_tables.headline_intervals_table(trained, trained, metrics)
    assert same["trained − random init [95% CI]"].tolist() == ["0.00 [0.00, 0.00]"] * 2
    assert same.resolved.tolist() == ["no", "no"]
    with pytest.raises(ValueError, match="other images"):
        vilas_tables.headline_intervals_table(trained, store(2, n=7), metrics)


def test_the_attention_table_shows_each_corrected_rate_with_its_interval():
    clean = store(3)
    perturbed = memory_store(np.random.default_rng(4).integers(0, 2, (15, 2, 6)),
                             perturbation={"kind": "attention", "mode": "self_only"})
    table = vilas_tables.attention_table("vit_b32", clean, [perturbed])
    assert table["corrected, 95% CI"].tolist() == [
        vilas_tables.interval_text(context.rate_interval(clean)),
        vilas_tables.interval_text(context.rate_interval(perturbed))]


def test_an_interval_table_resamples_the_units_of_each_group():
    import pandas as pd

    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"block": np.repeat([1, 2], 12), "layer": "mlp",
                          "rate": rng.uniform(0, 100, 24)})
    frame.loc[3, "rate"] = np.nan
    table = vilas_tables.interval_table(frame, ["block", "layer"], "rate")
    assert table[["block", "layer", "n"]].values.tolist() == [[1, "mlp", 11], [2, "mlp", 12]]
    second = frame[frame.block == 2].rate.to_numpy()
    assert table.loc[1, "mean"] == pytest.approx(second.mean())
    assert table.loc[1, "95% CI"] == vilas_tables.interval_text(bootstrap(second), 3)
    assert table.loc[0, "95% CI"].endswith("(1 excluded)")


def test_interval_cells_and_the_composition_table_bootstrap_each_cells_images():
    import pandas as pd

    rng = np.random.default_rng(2)
    fixed = pd.DataFrame([{"block": b, "source": src, "percent": 0.0,
                           "percent_images": rng.uniform(0, 100, 10)}
                          for b in (2, 3) for src in ("previous", "attn", "mlp", "composition")])
    fixed["percent"] = fixed.percent_images.map(np.mean)
    fixed.at[0, "percent_images"] = np.r_[fixed.percent_images[0][:9], np.nan]
    cells = vilas_tables.interval_cells(fixed, "block", "source", "percent_images", seed=4)
    assert cells.loc[3, "mlp"] == bootstrap(fixed.percent_images[6], seed=4).format(3)
    assert cells.loc[2, "previous"].endswith("(1 excluded)")
    pooled = pd.DataFrame({"block": [1], "layer": ["mlp"], "hits_images": [np.array([1, 4, 0])],
                           "tokens_images": [np.array([2, 5, 0])]})
    shown = vilas_tables.interval_cells(pooled, "block", "layer", "hits_images", 2,
                                        denominators="tokens_images")
    by_hand = bootstrap_ratio(np.array([1, 4]), np.array([2, 5]))
    assert by_hand.estimate == 5 / 7
    assert shown.loc[1, "mlp"] == by_hand.format(2) + " (1 excluded)"
    table = vilas_tables.composition_table(fixed, fixed, "toy")
    assert table.loc[3, "attn"] == pytest.approx(fixed.percent_images[5].mean())
    assert table.loc[3, "attn, 95% CI"] == vilas_tables.interval_text(
        bootstrap(fixed.percent_images[5]), 1)


def test_the_control_across_seeds_sets_each_seed_beside_the_mean_and_its_interval():
    from vitcls_utils.analysis.identifiability import headline
    from vitcls_utils.base.uncertainty import across_seeds

    controls = {seed: store(seed) for seed in (0, 1, 2)}
    table = vilas_tables.across_seeds_table(controls, ["identifiability_rate"])
    values = [headline(controls[s])["identifiability_rate"] for s in (0, 1, 2)]
    assert table.loc[0, ["seed 0", "seed 1", "seed 2"]].tolist() == pytest.approx(values)
    assert table.loc[0, "mean"] == pytest.approx(np.mean(values))
    assert table.loc[0, "95% CI across seeds"] == across_seeds(values).bounds(2)


def test_the_comparison_across_variants_shows_each_top1_with_its_images_interval():
    trained = store(3)
    row = vilas_tables.compare_table({"toy": trained}).iloc[0]
    right = 100.0 * (trained.pred == trained.labels)  # each image, by hand
    assert row["top-1 (this run)"] == pytest.approx(right.mean())
    assert row["top-1, 95% CI"] == vilas_tables.interval_text(bootstrap(right))
