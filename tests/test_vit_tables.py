"""Chapter 5's tables: the k-shot accuracies with the interval of their test images."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vitcls_utils.base.uncertainty import bootstrap
from vitcls_utils.report import vit_tables


def test_fewshot_cells_carry_the_interval_of_the_test_images_outcomes():
    last = pd.DataFrame({"token": ["[CLS]", "[CLS]", "mean"], "shots": [1, 5, 1],
                         "accuracy": [0.25, 0.75, 1.0]})
    table = vit_tables.fewshot_table(last, n_images=8)
    by_hand = bootstrap(np.r_[np.full(6, 100.0), 0, 0])  # 6 of 8 images right
    assert table.loc["[CLS]", 5] == f"0.750 [{by_hand.low / 100:.3f}, {by_hand.high / 100:.3f}]"
    assert table.loc["mean", 1] == "1.000 [1.000, 1.000]"
    assert vit_tables.fewshot_table(last, n_images=0).loc["[CLS]", 1] == "–"


def test_the_decoders_table_writes_each_top1_with_the_interval_of_its_images():
    from vitcls_utils.analysis.fewshot import decoders_table

    frame = pd.DataFrame({"token": "[CLS]", "block": [1, 1, 2, 2],
                          "decoder": ["projection", "5-shot LSR"] * 2,
                          "accuracy": [0.5, 0.75, 1.0, np.nan]})
    shown = vit_tables.decoders_with_intervals(decoders_table(frame), n_images=8)
    by_hand = bootstrap(np.r_[np.full(4, 100.0), np.zeros(4)])  # 4 of 8 images right
    assert shown.loc[("[CLS]", 1), "projection"] == (
        f"0.500 [{by_hand.low / 100:.3f}, {by_hand.high / 100:.3f}]")
    assert shown.loc[("[CLS]", 2), "projection"] == "1.000 [1.000, 1.000]"
    assert shown.loc[("[CLS]", 2), "5-shot LSR"] == "–"  # nothing measured


def test_the_distance_table_bootstraps_each_images_mean_over_the_heads():
    images = {(1, 1): np.r_[10.0, 12.0, 14.0, 9.0], (1, 2): np.r_[20.0, 18.0, 22.0, 21.0]}
    distances = pd.DataFrame([{"block": b, "head": h, "distance": v.mean(), "distance_images": v}
                              for (b, h), v in images.items()])
    table = vit_tables.distance_table(distances)
    by_hand = bootstrap(np.r_[15.0, 15.0, 18.0, 15.0])
    assert (table.loc[1, "min"], table.loc[1, "max"]) == (11.25, 20.25)
    assert table.loc[1, "mean"] == pytest.approx(by_hand.estimate)
    assert table.loc[1, "mean, 95% CI"] == f"[{by_hand.low:.2f}, {by_hand.high:.2f}]"
