"""Permutation test against enumeration and against a plain loop over the same shuffles."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from vitcls_utils.base.stats import box_summary, permutation_greater


def exact_p(x, y):
    """Every split of the pooled sample into |x| and |y| values: P(difference >= observed)."""
    pooled = np.concatenate([x, y])
    observed = np.mean(x) - np.mean(y)
    count = total = 0
    for chosen in itertools.combinations(range(pooled.size), len(x)):
        rest = np.setdiff1d(np.arange(pooled.size), chosen)
        total += 1
        count += pooled[list(chosen)].mean() - pooled[rest].mean() >= observed - 1e-12
    return count / total


def looped_p(x, y, n, seed, paper):
    """The same seeded shuffles, written the obvious way."""
    pooled = np.concatenate([x, y])
    observed = np.mean(x) - np.mean(y)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        perm = rng.permutation(pooled.size)
        diffs.append(pooled[perm[:len(x)]].mean() - pooled[perm[len(x):]].mean())
    diffs = np.array(diffs)
    if paper:
        return (diffs > observed + 1e-12).sum() / n
    return (1 + (diffs >= observed - 1e-12).sum()) / (1 + n)


@pytest.mark.parametrize("x, y", [([0.9, 0.8, 0.95], [0.5, 0.6, 0.55, 0.7]),
                                  ([0.5, 0.7, 0.6], [0.6, 0.5, 0.7, 0.55]),
                                  ([1.0, 1.0, 0.5], [1.0, 0.5, 0.5, 0.5])])
def test_permutation_p_matches_enumeration_and_loop(x, y):
    x, y = np.array(x), np.array(y)
    for paper in (False, True):
        assert permutation_greater(x, y, 300, seed=4, paper=paper) == pytest.approx(
            looped_p(x, y, 300, 4, paper))
    exact = exact_p(x, y)
    assert permutation_greater(x, y, 20000, seed=1) == pytest.approx(exact, abs=0.01)


def test_permutation_properties():
    x, y = np.full(50, 0.9), np.full(60, 0.1)
    assert permutation_greater(x, y, 99) == pytest.approx(1 / 100)  # +1 correction, never 0
    assert permutation_greater(x, y, 99, paper=True) == 0.0
    assert permutation_greater(y, x, 99) == 1.0
    assert permutation_greater(x, y, 50, seed=3) == permutation_greater(x, y, 50, seed=3)
    assert np.isnan(permutation_greater(x, [], 10))
    with pytest.raises(ValueError):
        permutation_greater(x, y, 0)


def test_box_summary():
    values = np.r_[np.arange(1, 11), 100.0]
    box = box_summary(values)
    assert box["median"] == 6 and box["q1"] == 3.5 and box["q3"] == 8.5
    assert box["whishi"] == 10 and box["whislo"] == 1  # 100 is an outlier
    assert box["mean"] == pytest.approx(values.mean())
