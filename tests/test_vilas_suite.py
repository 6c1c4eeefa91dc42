"""Chapter 4's suite tables, verdict and figures against the intervals computed directly
(catalogue E17)."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from vitcls_utils.base.uncertainty import bootstrap, paired_difference
from vitcls_utils.report import vilas_suite

matplotlib.use("Agg")


def scores_frame():
    rng = np.random.default_rng(0)
    n = 30
    random = rng.uniform(0.3, 0.7, n)
    frames = []
    for method, morf, lerf in (("class_space", random - 0.2 + rng.normal(0, 0.02, n), random),
                               ("random", random, random)):
        for criterion, values in (("MoRF AUC", morf), ("LeRF AUC", lerf)):
            frames.append(pd.DataFrame({"method": method, "criterion": criterion,
                                        "image": np.arange(n), "value": values}))
    return pd.concat(frames, ignore_index=True), random


def test_every_criterion_has_its_interval_and_a_verdict_from_the_paired_difference():
    scores, random = scores_frame()
    scores.loc[0, "value"] = np.nan  # one image without a number is excluded and counted
    table = vilas_suite.suite_table(scores).set_index(["method", "criterion"])
    row = table.loc[("class space (ours)", "MoRF AUC")]
    ours = scores[(scores.method == "class_space") & (scores.criterion == "MoRF AUC")].value
    direct = paired_difference(ours.to_numpy(), random)
    assert row["difference"] == pytest.approx(direct.estimate)
    assert (row["difference low"], row["difference high"]) == pytest.approx((direct.low,
                                                                              direct.high))
    assert row["mean"] == pytest.approx(np.nanmean(ours))
    assert row["mean [95% CI]"] == bootstrap(ours.to_numpy()).format(3)
    assert row.excluded == 1 and row.verdict == "more faithful than random"  # lower MoRF
    same = table.loc[("class space (ours)", "LeRF AUC")]
    assert same["difference from random [95% CI]"] == "0.000 [0.000, 0.000]"
    assert same.verdict == "not resolved" and same["p (Wilcoxon)"] == 1.0
    flipped = scores.assign(value=np.where(scores.criterion == "MoRF AUC", -scores.value,
                                           scores.value))
    worse = vilas_suite.suite_table(flipped).set_index(["method", "criterion"])
    assert worse.loc[("class space (ours)", "MoRF AUC"), "verdict"] == "less faithful than random"
    sentence = vilas_suite.suite_verdict(vilas_suite.suite_table(scores))
    assert "more faithful than the random map by MoRF AUC" in sentence
    assert "not distinguishable from the random map by LeRF AUC" in sentence


def mprt_frame(similarity):
    return pd.DataFrame({"step": np.repeat([1, 2], 10), "layer": np.repeat(["head", "blocks.0"],
                                                                          10),
                         "image": np.tile(np.arange(10), 2),
                         "spearman": np.r_[np.full(10, 0.9), similarity],
                         "ssim": np.r_[np.full(10, 0.9), similarity]})


def test_the_randomisation_table_reads_the_last_step_and_says_pass_or_fail():
    rng = np.random.default_rng(1)
    table = vilas_suite.mprt_table({"class_space": mprt_frame(rng.normal(0.05, 0.1, 10)),
                                    ("random", "independent"): mprt_frame(np.ones(10))})
    assert table.passes.tolist() == ["yes", "no"]
    assert table.loc[1, "Spearman [95% CI]"] == "1.000 [1.000, 1.000]"
    scores, _ = scores_frame()
    sentence = vilas_suite.suite_verdict(vilas_suite.suite_table(scores), table)
    assert "passes the sanity check" in sentence


def test_figures_draw_a_panel_per_curve_and_a_line_per_map():
    rows = []
    for method in ("class_space", "random"):
        for curve in vilas_suite.CURVES:
            for image in range(4):
                rows.append(pd.DataFrame({"method": method, "curve": curve,
                                          "fraction": [0, 0.5, 1],
                                          "image": image, "probability": [0.5, 0.3, 0.1]}))
    fig = vilas_suite.suite_figure(pd.concat(rows), "toy")
    assert len(fig.axes) == 6 and all(len(ax.lines) == 2 for ax in fig.axes)
    fig = vilas_suite.mprt_figure({"class_space": mprt_frame(np.zeros(10))})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["+head", "+blocks.0"]
