"""Chapter 5's tables: the k-shot accuracies with the interval of their test images."""
from __future__ import annotations

import numpy as np
import pandas as pd

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
