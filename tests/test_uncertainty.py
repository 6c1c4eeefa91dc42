"""Bootstrap intervals and paired differences (base/uncertainty), against known means and hand
computations."""
import math

import numpy as np
import pytest

from vitcls_utils.base import uncertainty as u


@pytest.mark.parametrize("method", u.METHODS)
def test_the_interval_covers_a_known_mean_at_its_nominal_rate(method):
    # 400 samples of 50 normal values: the 95% interval should hold the true mean in 95% of
    # them, within Monte Carlo error (sd of a coverage rate over 400 trials: 1.1 points)
    rng = np.random.default_rng(1)
    trials, hits = 400, 0
    for trial in range(trials):
        sample = rng.normal(3.0, 2.0, size=50)
        interval = u.bootstrap(sample, method=method, n_resamples=999, seed=trial)
        hits += interval.low <= 3.0 <= interval.high
    coverage = hits / trials
    se = math.sqrt(0.95 * 0.05 / trials)
    # bootstrap intervals at n = 50 run about one point narrow (the t vs normal quantile)
    assert 0.95 - 3 * se - 0.01 <= coverage <= 0.95 + 3 * se, coverage


def test_the_percentile_interval_is_the_quantiles_of_resampled_means_computed_by_hand():
    values = np.arange(20, dtype=float) ** 1.5
    interval = u.bootstrap(values, method="percentile", n_resamples=4000, seed=0)
    rng = np.random.default_rng(7)
    means = values[rng.integers(0, 20, (4000, 20))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    assert interval.estimate == pytest.approx(values.mean())
    # two independent generators: bounds agree to Monte Carlo error (~2% of the width)
    width = high - low
    assert abs(interval.low - low) < 0.05 * width and abs(interval.high - high) < 0.05 * width


def test_the_same_seed_gives_the_same_interval_and_another_seed_a_close_one():
    values = np.random.default_rng(0).random(30)
    first, again = u.bootstrap(values, seed=3), u.bootstrap(values, seed=3)
    other = u.bootstrap(values, seed=4)
    assert first == again
    assert first.low != other.low and abs(first.low - other.low) < 0.02


def test_non_finite_values_are_counted_and_never_enter_the_mean():
    interval = u.bootstrap([1.0, 2.0, np.nan, 3.0, np.inf, -np.inf])
    assert interval.estimate == 2.0 and interval.n == 3 and interval.excluded == 3
    empty = u.bootstrap([np.nan, np.nan])
    assert empty.n == 0 and empty.excluded == 2 and math.isnan(empty.estimate)
    assert empty.format() == "–"


def test_a_paired_difference_of_identical_inputs_is_exactly_zero():
    a = np.random.default_rng(0).random(25)
    interval = u.paired_difference(a, a.copy())
    assert (interval.estimate, interval.low, interval.high, interval.p_value) == (0, 0, 0, 1)
    assert not interval.excludes_zero and interval.method == "exact"


def test_inputs_equal_but_for_rounding_give_zero_not_a_resolved_difference():
    a = np.linspace(0.1, 1.0, 40)
    rounded = (a + 0.3) - 0.3  # differs from a in the last bits of some entries
    assert np.any(rounded != a)
    noise = u.paired_difference(rounded, a)
    assert (noise.estimate, noise.low, noise.high, noise.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not noise.excludes_zero
    a32 = a.astype(np.float32)  # float32 inputs: their own rounding
    assert u.paired_difference((a32 * np.float32(3)) / np.float32(3), a32).high == 0.0
    real = u.paired_difference(a + 1e-9, a)  # a real (tiny) shift is kept
    assert real.estimate == pytest.approx(1e-9) and real.excludes_zero


def test_bca_falls_back_to_the_percentile_interval_where_its_bounds_are_undefined(monkeypatch):
    calls = []
    real = u._scipy.bootstrap

    def flat_bca(data, statistic, method, **kwargs):  # BCa's flat-jackknife case: NaN bounds
        calls.append(method)
        result = real(data, statistic, method=method, **kwargs)
        if method == "BCa":
            return type("R", (), {"confidence_interval": type(result.confidence_interval)(
                math.nan, math.nan)})()
        return result

    monkeypatch.setattr(u._scipy, "bootstrap", flat_bca)
    values = np.random.default_rng(0).normal(size=30)
    interval = u.bootstrap(values)
    assert calls == ["BCa", "percentile"] and interval.method == "percentile"
    assert interval == u.bootstrap(values, method="percentile")
    assert interval.low < values.mean() < interval.high


def test_a_paired_difference_resolves_a_shift_that_the_two_separate_intervals_do_not():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 40)                  # large spread between images
    shifted = base + 0.1 + rng.normal(0, 0.02, 40)  # a small, consistent shift per image
    separate = u.bootstrap(shifted), u.bootstrap(base)
    assert separate[0].low < separate[1].high    # the separate intervals overlap
    paired = u.paired_difference(shifted, base)
    assert paired.excludes_zero and paired.low > 0.05 and paired.p_value < 1e-6
    assert paired.estimate == pytest.approx(np.mean(shifted - base))


def test_paired_inputs_must_have_one_value_per_image_in_both():
    with pytest.raises(ValueError, match="one value per image"):
        u.paired_difference([1.0, 2.0], [1.0])


def test_curve_intervals_resample_whole_images():
    rng = np.random.default_rng(0)
    level = rng.normal(0, 1, (60, 1))
    curves = level + np.linspace(0, 1, 5)        # each image's curve is its level plus a ramp
    mean, low, high = u.bootstrap_columns(curves, n_resamples=500)
    # the ramp is certain once images move as wholes: every interval has the same width
    assert np.allclose(high - low, (high - low)[0])
    assert np.allclose(mean, curves.mean(axis=0)) and np.all(low < mean) and np.all(mean < high)


def test_format_and_bad_settings():
    interval = u.Interval(0.456, 0.41, 0.52, 10)
    assert interval.format() == "0.46 [0.41, 0.52]"
    assert interval.format(0, percent=True) == "46% [41%, 52%]"
    with pytest.raises(ValueError, match="confidence"):
        u.bootstrap([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="method"):
        u.bootstrap([1.0, 2.0], method="student")


def test_a_pooled_rate_resamples_whole_images_and_matches_a_hand_loop():
    from vitcls_utils.base.uncertainty import bootstrap_ratio

    rng = np.random.default_rng(3)
    tokens = rng.integers(5, 40, 60)
    hits = rng.binomial(tokens, 0.3)
    interval = bootstrap_ratio(hits, tokens, method="percentile", seed=1)
    assert interval.estimate == pytest.approx(hits.sum() / tokens.sum())
    draws = np.random.default_rng(7).integers(0, 60, (4000, 60))  # a second, plain loop
    ratios = hits[draws].sum(1) / tokens[draws].sum(1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    assert interval.low == pytest.approx(low, abs=0.01)
    assert interval.high == pytest.approx(high, abs=0.01)
    with_empty = bootstrap_ratio(np.r_[hits, 0], np.r_[tokens, 0], seed=1)
    assert with_empty.excluded == 1 and with_empty.n == 60
    same = bootstrap_ratio([1, 2, 3], [2, 4, 6])
    assert (same.low, same.high, same.method) == (0.5, 0.5, "exact")


def test_an_accuracy_in_percent_has_the_interval_of_its_images_outcomes():
    from vitcls_utils.base.uncertainty import bootstrap_proportion

    outcomes = np.r_[np.full(13, 100.0), np.zeros(7)]  # 65% of 20 images, in any order
    shuffled = np.random.default_rng(0).permutation(outcomes)
    interval = bootstrap_proportion(65.0, 20)
    assert interval.estimate == pytest.approx(65.0)
    assert (interval.low, interval.high) == pytest.approx(
        (u.bootstrap(outcomes).low, u.bootstrap(outcomes).high))
    assert 35 < interval.low < 65 < interval.high < 90  # about ±21 points at n = 20
    assert u.bootstrap(shuffled).estimate == interval.estimate
    assert bootstrap_proportion(100.0, 5).format(1) == "100.0 [100.0, 100.0]"
    assert bootstrap_proportion(50.0, 0).n == 0
    with pytest.raises(ValueError, match="count of images"):
        bootstrap_proportion(150.0, 10)


def test_an_interval_across_seeds_is_students_t():
    from scipy import stats

    values = np.array([12.0, 15.0, 11.0])
    interval = u.across_seeds(values)
    low, high = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
    assert (interval.low, interval.high, interval.method) == (pytest.approx(low),
                                                              pytest.approx(high), "t")
    assert u.across_seeds([3.0]).method == "exact"
    assert u.across_seeds([3.0, np.nan, 5.0]).excluded == 1


def test_a_difference_of_two_pooled_rates_resamples_whole_images_as_a_hand_loop():
    from vitcls_utils.base.uncertainty import bootstrap_ratio_difference

    rng = np.random.default_rng(4)
    n_a, n_b = rng.integers(0, 20, 50), rng.integers(1, 20, 50)
    s_a, s_b = rng.normal(1.0, 0.3, 50) * n_a, rng.normal(0.5, 0.3, 50) * n_b
    interval = bootstrap_ratio_difference(s_a, n_a, s_b, n_b, method="percentile", seed=2)
    assert interval.estimate == pytest.approx(s_a.sum() / n_a.sum() - s_b.sum() / n_b.sum())
    draws = np.random.default_rng(9).integers(0, 50, (4000, 50))  # a second, plain loop
    diffs = s_a[draws].sum(1) / n_a[draws].sum(1) - s_b[draws].sum(1) / n_b[draws].sum(1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert interval.low == pytest.approx(low, abs=0.03)
    assert interval.high == pytest.approx(high, abs=0.03)
    assert interval.excludes_zero
    nan_image = bootstrap_ratio_difference(np.r_[s_a, np.nan], np.r_[n_a, 3], np.r_[s_b, 1],
                                           np.r_[n_b, 1])
    assert nan_image.excluded == 1 and nan_image.n == 50
    assert bootstrap_ratio_difference([1.0], [0], [1.0], [1]).n == 0  # a group without tokens


def test_an_unpaired_difference_resamples_each_sample_on_its_own_as_a_hand_loop():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.6, 0.2, 16), rng.normal(0.3, 0.2, 12)
    interval = u.unpaired_difference(a, b, method="percentile", seed=1)
    assert interval.estimate == a.mean() - b.mean() and interval.n == 28
    draws = np.random.default_rng(3)  # a second, plain loop: each sample drawn on its own
    diffs = [a[draws.integers(0, 16, 16)].mean() - b[draws.integers(0, 12, 12)].mean()
             for _ in range(4000)]
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert interval.low == pytest.approx(low, abs=0.02)
    assert interval.high == pytest.approx(high, abs=0.02)
    assert interval.excludes_zero and interval.p_value < 0.05
    same = u.unpaired_difference([0.5, 0.5], [0.5, 0.5, np.nan])
    assert (same.low, same.high, same.excluded, same.p_value) == (0.0, 0.0, 1, 1.0)
    assert u.unpaired_difference([np.nan], [1.0, 2.0]).n == 0


def test_a_statistic_of_column_means_resamples_whole_images_as_a_hand_loop():
    rng = np.random.default_rng(6)
    hits = (rng.random((60, 5)) < [0.2, 0.5, 0.55, 0.3, 0.1]).astype(float)
    interval = u.bootstrap_column_statistic(hits, lambda m: m.max(-1), seed=0)
    assert interval.estimate == hits.mean(0).max() and interval.method == "percentile"
    draws = np.random.default_rng(8).integers(0, 60, (4000, 60))  # rows drawn, a plain loop
    best = np.array([hits[d].mean(0).max() for d in draws])
    low, high = np.percentile(best, [2.5, 97.5])
    assert interval.low == pytest.approx(low, abs=0.03)
    assert interval.high == pytest.approx(high, abs=0.03)
    nan_image = u.bootstrap_column_statistic(np.vstack([hits, [np.nan] * 5]),
                                               lambda m: m.max(-1))
    assert (nan_image.n, nan_image.excluded) == (60, 1)
    same = u.bootstrap_column_statistic(np.ones((4, 3)), lambda m: m.max(-1))
    assert (same.low, same.high, same.method) == (1.0, 1.0, "exact")


def test_a_proportion_is_computed_once_per_count_and_equals_its_outcomes_interval():
    u._proportion.cache_clear()
    first = u.bootstrap_proportion(62.5, 40)
    again = u.bootstrap_proportion(62.5, 40)
    assert again is first and u._proportion.cache_info().hits == 1
    by_hand = u.bootstrap(np.r_[np.full(25, 100.0), np.zeros(15)])
    assert first == by_hand
