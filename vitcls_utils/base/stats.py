"""Statistical tests used by the figures: paired Wilcoxon, seeded permutation tests, and the
box summaries of large samples."""
from __future__ import annotations

from typing import Dict

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


def permutation_greater(x: np.ndarray, y: np.ndarray, n_permutations: int = 300,
                        seed: int = 0, paper: bool = False) -> float:
    """One-sided permutation test of mean(x) > mean(y) on the pooled values.

    The labels of the pooled sample are shuffled ``n_permutations`` times with a seeded
    generator. p = (1 + #{shuffled difference >= observed}) / (1 + n), the estimate that is never
    0. ``paper=True`` gives the authors' #{shuffled > observed} / n (bug B19).
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.size == 0 or y.size == 0:
        return float("nan")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, not {n_permutations}")
    pooled = np.concatenate([x, y])
    total, n_x, n_y = pooled.sum(), x.size, y.size
    observed = x.mean() - y.mean()
    rng = np.random.default_rng(seed)
    differences = np.empty(n_permutations)
    for k in range(n_permutations):
        first = pooled[rng.permutation(pooled.size)[:n_x]].sum()  # x's share of a shuffle
        differences[k] = first / n_x - (total - first) / n_y
    # shuffles that reproduce the observed split must count as ">=" despite rounding
    tolerance = 1e-12 * max(1.0, abs(observed))
    if paper:
        return float((differences > observed + tolerance).sum() / n_permutations)
    return float((1 + (differences >= observed - tolerance).sum()) / (1 + n_permutations))


def box_summary(values: np.ndarray) -> Dict[str, float]:
    """Quartiles, 1.5-IQR whiskers and mean of a sample: what a boxplot draws, computed here
    so that millions of values never become a DataFrame."""
    values = np.asarray(values).ravel()
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    low = values[values >= q1 - 1.5 * (q3 - q1)].min()
    high = values[values <= q3 + 1.5 * (q3 - q1)].max()
    return {"q1": q1, "median": median, "q3": q3, "whislo": low, "whishi": high,
            "mean": float(values.mean())}


def stars(p: float) -> str:
    """The paper's marking: a star when p < 0.05."""
    return "*" if p < 0.05 else ""
