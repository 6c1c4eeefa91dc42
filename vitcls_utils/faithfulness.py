"""How faithful an explanation's token order is, read off the perturbation test (catalogue
E15): the paired test over images that a map beats random, the baseline lines, and how many
tokens can be removed before the accuracy falls.

The curves and per-image scores come from :func:`vitcls_utils.explain.perturbation_test`.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import pandas as pd

from .stats import wilcoxon_greater

#: the paper's claim per test: above random for the negative test, below for the positive
ALTERNATIVES = {"negative": "greater", "positive": "less"}


def auc_tests(scores: pd.DataFrame, against: str = "random") -> pd.DataFrame:
    """Per method and test, a paired one-sided Wilcoxon signed-rank test over images of the
    image's score (its share of the curve's points classified right, the per-image area)
    against ``against``'s: greater in the negative test, less in the positive one, the claim
    the paper makes of its AUCs without a test. Rows (method, test, alternative, mean score,
    mean score of ``against``, p_value, significant)."""
    rows = []
    for (method, test), group in scores.groupby(["method", "test"], sort=False):
        if method == against:
            continue
        base = scores[(scores.method == against) & (scores.test == test)]
        ours = group.sort_values("image").score.to_numpy()
        theirs = base.sort_values("image").score.to_numpy()
        if ours.shape != theirs.shape:
            raise ValueError(f"{method} and {against} were scored on different images")
        alternative = ALTERNATIVES[test]
        p = (wilcoxon_greater(ours, theirs) if alternative == "greater"
             else wilcoxon_greater(theirs, ours))
        rows.append({"method": method, "test": test, "alternative": alternative,
                     "mean score": float(ours.mean()),
                     f"mean score ({against})": float(theirs.mean()),
                     "p_value": p, "significant": p < 0.05})
    return pd.DataFrame(rows)


def baselines(curves: pd.DataFrame, unperturbed: float, method: str = "class_space"
              ) -> Dict[str, float]:
    """The A11 baseline lines: the unperturbed top-1 (every token kept), and the authors' line,
    the first point of the plotted curve, i.e. the negative curve with the most tokens kept
    (B17)."""
    negative = curves[(curves.method == method) & (curves.test == "negative")]
    first = float(negative.loc[negative.kept.idxmax(), "accuracy"])
    return {"unperturbed": float(unperturbed), "first point (the paper's line, B17)": first}


def accuracy_kept(curves: pd.DataFrame, baseline: float, method: str = "class_space",
                  test: str = "negative") -> float:
    """The largest % of image tokens that can be removed, least important first, with the
    accuracy at or above ``baseline`` at every step up to it (the paper: "maintained or
    improved when up to 60% of the tokens are removed"); 0 when the first removal already
    costs accuracy."""
    curve = curves[(curves.method == method) & (curves.test == test)].sort_values("removed")
    removed = curve.removed.to_numpy()
    below = curve.accuracy.to_numpy() < baseline - 1e-12
    if not below.any():
        return float(100 * removed.max())
    first_drop = int(np.argmax(below))
    return float(100 * removed[first_drop - 1]) if first_drop else 0.0
