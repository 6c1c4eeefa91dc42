"""Chapter 8's figures draw what they are given."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

from vitcls_utils.base.uncertainty import Interval
from vitcls_utils.report import readout_figures as rf

matplotlib.use("Agg")


def test_figures_draw():
    table = pd.DataFrame([{"kind": k, "block": b, "readout": r, "kl": 0.1 * b,
                           "agreement": b / 3, "top1": 0.5} for k in ("cls", "image")
                          for r in ("plain", "tuned", "probe") for b in (1, 2, 3)])
    fig = rf.lens_figure(table, "t")
    assert len(fig.axes[0].lines) == 4 and len(fig.axes[1].lines) == 6
    writers = pd.DataFrame({"block": [0, 1], "attention": [0.1, 0.2], "head_logit": [0.05, 0.1],
                            "mlp": [0.3, 0.0]})
    assert len(rf.writers_figure(writers, "w").axes[0].lines) >= 3
    heads = np.zeros((2, 2, 2, 5))
    heads[:, 1, 0, 1:] = [1, 2, 3, 4]
    fig = rf.head_maps_figure(heads, [(1, 0, 10.0)], 1, (2, 2), "m")
    assert np.array_equal(fig.axes[0].images[0].get_array(), [[1, 2], [3, 4]])
    curve = pd.DataFrame({"block": [1, 2], "logit_drop": [Interval(1, 0.5, 1.5, 4)] * 2})
    assert rf.ablation_curve_figure(curve, "c").axes[0].get_xlabel().startswith("block")
