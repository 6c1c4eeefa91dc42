"""Uncertainty of per-image metrics: seeded bootstrap confidence intervals over images, and
paired differences between two settings measured on the same images.

Every rate, drop, AUC or agreement the book prints is a mean over images; these intervals say
how far it could move with another draw of images. Non-finite values never enter a mean: they
are dropped and counted (``Interval.excluded``), so a table can say how many images were left
out. The resampling engine is :func:`scipy.stats.bootstrap` (percentile or BCa, seeded).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Tuple

import numpy as np
from scipy import stats as _scipy

#: the confidence level of every interval the book prints
CONFIDENCE = 0.95
#: resamples per interval: Monte Carlo error of a 95% percentile bound ~0.5% of its width
N_RESAMPLES = 2000
METHODS = ("percentile", "bca")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval over images.

    Attributes:
        estimate: the statistic of the finite values (for a paired difference: of a - b).
        low, high: the interval's bounds (equal to the estimate when every value is the same).
        n: how many values entered; excluded: how many non-finite values were dropped.
        confidence: the nominal coverage (0.95); method: ``percentile``, ``bca``, ``t`` or
            ``exact`` (no spread: the interval is the point); p_value: a difference's test.
    """

    estimate: float
    low: float
    high: float
    n: int
    excluded: int = 0
    confidence: float = CONFIDENCE
    method: str = "percentile"
    p_value: float = float("nan")

    @property
    def excludes_zero(self) -> bool:
        """Whether the whole interval lies on one side of zero (a difference that is resolved)."""
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 2, percent: bool = False) -> str:
        """``0.46 [0.41, 0.52]`` (or ``46% [41%, 52%]``); ``–`` when nothing was measured."""
        if self.n == 0 or not math.isfinite(self.estimate):
            return "–"
        scale, unit = (100.0, "%") if percent else (1.0, "")
        shown = [f"{scale * value:.{digits}f}{unit}" for value in (self.estimate, self.low,
                                                                    self.high)]
        return f"{shown[0]} [{shown[1]}, {shown[2]}]"

    def bounds(self, digits: int = 2) -> str:
        """``[0.41, 0.52]``, the interval alone (a table's CI column); ``–`` when empty."""
        if self.n == 0 or not math.isfinite(self.low):
            return "–"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


def finite(values: np.ndarray) -> Tuple[np.ndarray, int]:
    """The finite entries of ``values`` (flattened, float64) and how many were dropped."""
    values = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(values)
    return values[keep], int((~keep).sum())


def bootstrap(values: np.ndarray, statistic: Callable[..., np.ndarray] = np.mean, *,
              confidence: float = CONFIDENCE, method: str = "bca",
              n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Bootstrap confidence interval of ``statistic`` over images.

    Args:
        values: one value per image, any shape (flattened); NaN/inf are dropped and counted.
        statistic: a vectorised statistic taking ``axis`` (numpy's mean, median, ...).
        confidence: nominal coverage, 0 < confidence < 1.
        method: ``bca`` (bias-corrected and accelerated, the default) or ``percentile``.
        n_resamples: bootstrap resamples; seed: the generator's seed (same seed, same interval).

    Returns:
        Interval: the statistic of the finite values and its bounds; ``method="exact"`` with
        low = high = estimate when fewer than two distinct values leave nothing to resample,
        and NaN bounds with ``n == 0`` when no value is finite.
    """
    _check(confidence, method, n_resamples)
    kept, excluded = finite(values)
    if kept.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, excluded, confidence, "exact")
    estimate = float(statistic(kept, axis=-1))
    if np.unique(kept).size < 2:
        return Interval(estimate, estimate, estimate, kept.size, excluded, confidence, "exact")
    low, high, used = _resample((kept,), statistic, False, confidence, method, n_resamples,
                                seed, kept.size)
    return Interval(estimate, low, high, kept.size, excluded, confidence, used)


def paired_difference(a: np.ndarray, b: np.ndarray, *, confidence: float = CONFIDENCE,
                      method: str = "bca", n_resamples: int = N_RESAMPLES,
                      seed: int = 0) -> Interval:
    """Mean of ``a - b`` over the images both settings measured, its bootstrap interval, and the
    two-sided Wilcoxon signed-rank p-value.

    Args:
        a, b: one value per image each, the same images in the same order (equal shapes).
        confidence, method, n_resamples, seed: as :func:`bootstrap`.

    Returns:
        Interval: of the mean difference; an image non-finite in either input is excluded (and
        counted); inputs equal to within rounding (8 eps of their dtype) give exactly [0, 0]
        with p = 1, never an interval of rounding noise that "excludes zero".
    """
    eps = 8 * np.finfo(np.result_type(np.asarray(a).dtype, np.asarray(b).dtype, np.float32)).eps
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values need one value per image in both, got {a.size} and "
                         f"{b.size} values")
    with np.errstate(invalid="ignore"):  # inf - inf: excluded below as non-finite
        raw = a - b
        raw[np.abs(raw) <= eps * np.maximum(np.abs(a), np.abs(b))] = 0.0
    interval = bootstrap(raw, confidence=confidence, method=method, n_resamples=n_resamples,
                         seed=seed)
    differences, _ = finite(raw)
    p_value = (1.0 if not np.any(differences != 0)
               else float(_scipy.wilcoxon(differences, alternative="two-sided").pvalue))
    return Interval(interval.estimate, interval.low, interval.high, interval.n,
                    interval.excluded, confidence, interval.method, p_value)


def bootstrap_columns(values: np.ndarray, *, confidence: float = CONFIDENCE,
                      n_resamples: int = N_RESAMPLES, seed: int = 0
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile intervals of the column means of an images-by-points array (a curve per
    image), resampling whole images so that a curve's points move together.

    Args:
        values: (n_images, n_points); an image with any non-finite point is dropped.
        confidence, n_resamples, seed: as :func:`bootstrap`.

    Returns:
        Tuple: mean, low, high, each (n_points,).
    """
    _check(confidence, "percentile", n_resamples)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected (images, points), got shape {values.shape}")
    values = values[np.isfinite(values).all(axis=1)]
    if len(values) == 0:
        return (np.full(values.shape[1], np.nan),) * 3
    rng, tail = np.random.default_rng(seed), 50 * (1 - confidence)
    means = np.stack([values[rng.integers(0, len(values), len(values))].mean(axis=0)
                      for _ in range(n_resamples)])
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return values.mean(axis=0), low, high


_SCIPY_METHOD = {"percentile": "percentile", "bca": "BCa"}


def _check(confidence: float, method: str, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, not {n_resamples}")


def _resample(data: tuple, statistic, paired: bool, confidence: float, method: str,
              n_resamples: int, seed: int, size: int) -> Tuple[float, float, str]:
    """scipy's interval as (low, high, method), ~16 M values in memory at once. BCa gives NaN
    bounds where its jackknife is flat (values equal but for rounding): the percentile
    interval is taken there instead, and the method says so."""
    batch = max(1, min(N_RESAMPLES, (1 << 24) // max(size, 1)))
    for used in dict.fromkeys((method, "percentile")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _scipy.DegenerateDataWarning)
            ci = _scipy.bootstrap(data, statistic, paired=paired, confidence_level=confidence,
                                  n_resamples=n_resamples, method=_SCIPY_METHOD[used],
                                  vectorized=True, batch=batch,
                                  random_state=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    return low, high, used


def bootstrap_ratio(numerators: np.ndarray, denominators: np.ndarray, *,
                    confidence: float = CONFIDENCE, method: str = "bca",
                    n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Bootstrap interval of a pooled rate, sum(numerators) / sum(denominators), resampling
    whole images (each image's pair moves together): the rates pooled over tokens whose number
    differs between images (a token group, the tokens a removal kept).

    Args:
        numerators, denominators: one count per image each (e.g. identifiable tokens, tokens);
            an image with a non-finite value or a zero denominator is excluded and counted.
        confidence, method, n_resamples, seed: as :func:`bootstrap`.

    Returns:
        Interval: of the pooled ratio; ``exact`` when every image has the same ratio.
    """
    _check(confidence, method, n_resamples)
    num = np.asarray(numerators, dtype=np.float64).ravel()
    den = np.asarray(denominators, dtype=np.float64).ravel()
    if num.shape != den.shape:
        raise ValueError(f"a ratio needs one numerator and one denominator per image, got "
                         f"{num.size} and {den.size}")
    keep = np.isfinite(num) & np.isfinite(den) & (den != 0)
    num, den, excluded = num[keep], den[keep], int((~keep).sum())
    if num.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, excluded, confidence, "exact")
    estimate = float(num.sum() / den.sum())
    if np.unique(num / den).size < 2:
        return Interval(estimate, estimate, estimate, num.size, excluded, confidence, "exact")

    def pooled(a, b, axis=-1):
        return a.sum(axis=axis) / b.sum(axis=axis)

    low, high, used = _resample((num, den), pooled, True, confidence, method, n_resamples,
                                seed, num.size)
    return Interval(estimate, low, high, num.size, excluded, confidence, used)


def bootstrap_proportion(percent: float, n: int, *, confidence: float = CONFIDENCE,
                         method: str = "bca", n_resamples: int = N_RESAMPLES,
                         seed: int = 0) -> Interval:
    """Bootstrap interval of an accuracy over ``n`` images given as a percentage: the images'
    outcomes are k = round(percent x n / 100) ones and n - k zeros, and the bootstrap of their
    mean depends on nothing else, so this is the per-image interval (computed once per k, n).

    Args:
        percent: the accuracy in % (e.g. a top-1); n: how many images it is over.
        confidence, method, n_resamples, seed: as :func:`bootstrap`.

    Returns:
        Interval in %; n == 0 (or a NaN percent) gives an empty interval.
    """
    if n <= 0 or not math.isfinite(float(percent)):
        return Interval(math.nan, math.nan, math.nan, 0, 0, confidence, "exact")
    k = int(round(float(percent) * n / 100))
    if not 0 <= k <= n:
        raise ValueError(f"{percent}% of {n} images is not a count of images")
    return _proportion(k, int(n), confidence, method, n_resamples, seed)


@lru_cache(maxsize=4096)
def _proportion(k: int, n: int, confidence: float, method: str, n_resamples: int,
                seed: int) -> Interval:
    return bootstrap(np.r_[np.full(k, 100.0), np.zeros(n - k)], confidence=confidence,
                     method=method, n_resamples=n_resamples, seed=seed)


def across_seeds(values, *, confidence: float = CONFIDENCE) -> Interval:
    """Interval of a control's mean over random-init seeds: Student's t with k - 1 degrees of
    freedom (a bootstrap of 3-5 values says nothing), method ``t``.

    Args:
        values: one value per seed (non-finite ones dropped and counted).
        confidence: nominal coverage.

    Returns:
        Interval: the mean and mean ± t x sd / sqrt(k); ``exact`` with one seed or equal values.
    """
    kept, excluded = finite(values)
    if kept.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, excluded, confidence, "exact")
    mean = float(kept.mean())
    if kept.size < 2 or np.unique(kept).size < 2:
        return Interval(mean, mean, mean, kept.size, excluded, confidence, "exact")
    half = float(_scipy.t.ppf(0.5 + confidence / 2, kept.size - 1) * kept.std(ddof=1)
                 / math.sqrt(kept.size))
    return Interval(mean, mean - half, mean + half, kept.size, excluded, confidence, "t")


def bootstrap_ratio_difference(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray,
                               den_b: np.ndarray, *, confidence: float = CONFIDENCE,
                               method: str = "bca", n_resamples: int = N_RESAMPLES,
                               seed: int = 0) -> Interval:
    """Bootstrap interval of the difference of two pooled rates measured on the same images,
    sum(num_a) / sum(den_a) - sum(num_b) / sum(den_b), resampling whole images (an image's
    four counts move together): two token groups of the same images compared.

    Args:
        num_a, den_a, num_b, den_b: one value per image each (e.g. a group's summed values and
            its token count); an image with a non-finite value is excluded and counted, an
            image without tokens of a group still counts for the other.
        confidence, method, n_resamples, seed: as :func:`bootstrap`.

    Returns:
        Interval: of the difference; NaN bounds with ``n == 0`` when a group has no tokens.
    """
    _check(confidence, method, n_resamples)
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (num_a, den_a, num_b, den_b)]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"two rates need four values per image, got sizes "
                         f"{[a.size for a in arrays]}")
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    arrays, excluded = [a[keep] for a in arrays], int((~keep).sum())
    if not keep.any() or arrays[1].sum() == 0 or arrays[3].sum() == 0:
        return Interval(math.nan, math.nan, math.nan, 0, excluded, confidence, "exact")

    def difference(na, da, nb, db, axis=-1):
        with np.errstate(invalid="ignore", divide="ignore"):
            return na.sum(axis=axis) / da.sum(axis=axis) - nb.sum(axis=axis) / db.sum(axis=axis)

    estimate = float(difference(*arrays))
    if arrays[0].size < 2:
        return Interval(estimate, estimate, estimate, 1, excluded, confidence, "exact")
    low, high, used = _resample(tuple(arrays), difference, True, confidence, method,
                                n_resamples, seed, arrays[0].size)
    return Interval(estimate, low, high, arrays[0].size, excluded, confidence, used)


def unpaired_difference(a: np.ndarray, b: np.ndarray, *, confidence: float = CONFIDENCE,
                        method: str = "bca", n_resamples: int = N_RESAMPLES,
                        seed: int = 0) -> Interval:
    """Mean of ``a`` minus mean of ``b`` for two independent samples (different units: a
    trained model's strongest units beside a random-init control's), each resampled on its
    own, and the two-sided Mann-Whitney U p-value.

    Args:
        a, b: one value per unit each, any sizes; NaN/inf are dropped and counted.
        confidence, method, n_resamples, seed: as :func:`bootstrap`.

    Returns:
        Interval: of the difference of means (``n``: the two samples' sizes together);
        ``exact`` where neither sample has two distinct values, empty (``n == 0``) where one
        has no finite value.
    """
    _check(confidence, method, n_resamples)
    (a, dropped_a), (b, dropped_b) = finite(a), finite(b)
    excluded, nan = dropped_a + dropped_b, float("nan")
    if a.size == 0 or b.size == 0:
        return Interval(nan, nan, nan, 0, excluded, confidence, "exact")
    estimate = float(a.mean() - b.mean())
    if np.unique(a).size < 2 and np.unique(b).size < 2:
        p_value = 1.0 if estimate == 0 else nan
        return Interval(estimate, estimate, estimate, a.size + b.size, excluded, confidence,
                        "exact", p_value)

    def difference(x, y, axis=-1):
        return x.mean(axis=axis) - y.mean(axis=axis)

    low, high, used = _resample((a, b), difference, False, confidence, method, n_resamples,
                                seed, a.size + b.size)
    p_value = float(_scipy.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return Interval(estimate, low, high, a.size + b.size, excluded, confidence, used, p_value)


def bootstrap_column_statistic(values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray],
                               *, confidence: float = CONFIDENCE,
                               n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Percentile interval of a statistic of the column means of an images-by-points array
    (e.g. the best position's accuracy: the maximum over positions of their means over
    images), resampling whole images: each resample's column means are a weighted mean with
    the images' draw counts as weights, so the statistic is chosen afresh in every resample
    (the best position may change, which is what a new draw of images would do).

    Args:
        values: (n_images, n_points); an image with any non-finite point is dropped and counted.
        statistic: column means (..., n_points) to one value each (...,), e.g.
            ``lambda m: m.max(-1)``.
        confidence, n_resamples, seed: as :func:`bootstrap`.

    Returns:
        Interval (``percentile``) of the statistic; its estimate is the statistic of the plain
        column means; ``exact`` where every image has the same values.
    """
    _check(confidence, "percentile", n_resamples)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected (images, points), got shape {values.shape}")
    keep = np.isfinite(values).all(axis=1)
    values, excluded = values[keep], int((~keep).sum())
    if len(values) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, excluded, confidence, "exact")
    n, estimate = len(values), float(statistic(values.mean(axis=0)))
    if (values == values[0]).all():
        return Interval(estimate, estimate, estimate, n, excluded, confidence, "exact")
    rng, draws, done = np.random.default_rng(seed), [], 0
    per_batch = max(1, min(n_resamples, (1 << 24) // max(n, 1)))
    while done < n_resamples:
        size = min(per_batch, n_resamples - done)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)  # [size, n]
        draws.append(statistic(counts @ values / n))
        done += size
    tail = 50 * (1 - confidence)
    low, high = np.percentile(np.concatenate(draws), [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), n, excluded, confidence, "percentile")
