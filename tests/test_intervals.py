"""Intervals and null bands against independent oracles: numpy resampling loops, scikit-learn's AUC, permutations."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fastforget.metrics.intervals import auc_null_band, auc_of, bootstrap_auc, bootstrap_mean, combine_cells


def test_bootstrap_mean_matches_a_resampling_loop(rng):
    values = rng.gamma(2.0, 1.0, 301)
    loop = np.random.default_rng(0)
    means = [values[loop.integers(0, len(values), len(values))].mean() for _ in range(4000)]
    expected = np.quantile(means, [0.025, 0.975])
    assert bootstrap_mean(values, seed=1, resamples=4000) == pytest.approx(expected, abs=0.03)
    assert bootstrap_mean([], seed=0) is None
    assert bootstrap_mean([0.25], seed=0) == [0.25, 0.25]


def test_bootstrap_mean_of_zeros_and_ones_is_binomial(rng):
    hits = (rng.random(500) < 0.3).astype(float)
    low, high = bootstrap_mean(hits, seed=2, resamples=20000)
    p, se = hits.mean(), np.sqrt(hits.mean() * (1 - hits.mean()) / 500)
    assert (low, high) == pytest.approx((p - 1.96 * se, p + 1.96 * se), abs=0.006)


def test_auc_matches_sklearn_with_ties(rng):
    scores = np.round(rng.normal(size=400), 1)
    members = rng.random(400) < 0.4
    scores[members] += 0.5
    assert auc_of(scores[members], scores[~members]) == pytest.approx(roc_auc_score(members, scores))
    assert auc_of(np.array([-np.inf, 0.0]), np.array([-np.inf])) == pytest.approx(0.75)  # -inf ties, not NaN


def test_bootstrap_auc_brackets_the_auc(rng):
    members = rng.random(600) < 0.5
    scores = rng.normal(members * 0.8, 1.0)
    low, high = bootstrap_auc(scores, members, seed=0)
    auc = roc_auc_score(members, scores)
    assert low < auc < high and 0.04 < high - low < 0.12  # SE of an AUC near 0.7 with 300 + 300 samples ~ 0.02


def test_null_band_matches_a_permutation_loop_and_narrows_as_one_over_root_n(rng):
    for scores in (rng.normal(size=200), np.round(rng.beta(8, 0.3, 200), 2)):  # the second: ties near 1
        members = np.arange(200) < 100
        loop = np.random.default_rng(3)
        null = [roc_auc_score(loop.permutation(members), scores) for _ in range(5000)]
        assert auc_null_band(scores, members) == pytest.approx(np.quantile(null, [0.005, 0.995]), abs=0.012)
    widths = []
    for n in (100, 1600):
        low, high = auc_null_band(rng.normal(size=2 * n), np.arange(2 * n) < n)
        widths.append(high - low)
        assert (low + high) / 2 == pytest.approx(0.5)
        assert high - low == pytest.approx(2 * 2.576 / np.sqrt(6 * n), rel=0.01)
    assert widths[0] / widths[1] == pytest.approx(4.0, rel=0.01)
    assert auc_null_band(np.ones(50), np.arange(50) < 25) == [0.5, 0.5]  # all tied: chance is exactly 0.5


def test_combined_cells_carry_spread_between_and_within_cells(rng):
    values = [0.20, 0.22, 0.18, 0.21]
    tight = combine_cells(values, [[v - 1e-6, v + 1e-6] for v in values], seed=0)
    loop = np.random.default_rng(1)
    means = [np.mean(loop.choice(values, 4)) for _ in range(4000)]
    assert tight == pytest.approx(np.quantile(means, [0.025, 0.975]), abs=0.003)  # cells resampled
    wide = combine_cells(values, [[v - 0.1, v + 0.1] for v in values], seed=0)
    assert wide[1] - wide[0] > 2 * (tight[1] - tight[0])  # within-cell error adds to it
    assert combine_cells([0.3], [[0.1, 0.5]], seed=0) == [0.1, 0.5]  # one cell: its own interval
