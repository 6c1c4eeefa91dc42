"""Statistical tests used by the figures: paired Wilcoxon, seeded permutation tests."""
from __future__ import annotations

import numpy as np
from scipy import stats as _scipy


def wilcoxon_greater(x: np.ndarray, y: np.ndarray) -> float:
    """One-sided paired Wilcoxon signed-rank p-value for x > y (scipy, zero_method 'wilcox').

    When every pair is tied there is no evidence either way: p = 1.
    """
    x, y = np.asarray(x), np.asarray(y)  # dtype kept: float32 inputs give float32 ties
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal shapes, got {x.shape} and {y.shape}")
    if not np.any(x != y):
        return 1.0
    return float(_scipy.wilcoxon(x, y, alternative="greater").pvalue)


def stars(p: float) -> str:
    """The paper's marking: a star when p < 0.05."""
    return "*" if p < 0.05 else ""
