"""Uncertainty for every headline number: percentile bootstrap intervals, the permutation null band of an AUC, and
intervals over benchmark cells (seeds, forget sets) that keep each cell's own sampling error.

Every headline metric here is a mean over samples (accuracy, the fraction an attack calls non-member, the mean TV
distance, U-LIRA's per-sample balanced accuracy) or an AUC, so two resampling schemes cover them all. Resampling is
seeded by the evaluation seed, so an interval is as repeatable as the value it brackets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

RESAMPLES = 1000
LEVEL = 0.95  # confidence intervals
NULL_LEVEL = 0.99  # the band of AUCs an attack blind to membership reaches by chance
_CHUNK_ENTRIES = 4_000_000  # resampled values held in memory at once

Interval = list[float]  # [low, high], JSON-ready


def _percentiles(replicates: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(replicates, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return [float(low), float(high)]


def bootstrap_mean(values: Sequence[float] | np.ndarray, *, seed: int, resamples: int = RESAMPLES,
                   level: float = LEVEL) -> Interval | None:
    """Percentile bootstrap interval of the mean of per-sample `values` [n]; None without samples.

    0/1 values (a sample right or wrong, called member or not) resample exactly as Binomial(n, mean) / n.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    n = len(values)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    if np.isin(values, (0.0, 1.0)).all():
        return _percentiles(rng.binomial(n, values.mean(), resamples) / n, level)
    per_chunk = max(1, _CHUNK_ENTRIES // n)
    means = [values[rng.integers(0, n, (min(per_chunk, resamples - start), n))].mean(1)
             for start in range(0, resamples, per_chunk)]
    return _percentiles(np.concatenate(means), level)


def auc_of(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """P(member score > non-member score) + P(equal) / 2 (the ROC AUC), by sorting: O(n log n)."""
    ordered = np.sort(nonmember_scores)
    below = np.searchsorted(ordered, member_scores, side="left")
    at_or_below = np.searchsorted(ordered, member_scores, side="right")
    return float((below + 0.5 * (at_or_below - below)).sum() / (len(member_scores) * len(ordered)))


def bootstrap_auc(scores: np.ndarray, is_member: np.ndarray, *, seed: int, resamples: int = RESAMPLES,
                  level: float = LEVEL) -> Interval | None:
    """Interval of the AUC of `scores` [n] for members against non-members, each side resampled on its own."""
    members, nonmembers = scores[is_member], scores[~is_member]
    if len(members) == 0 or len(nonmembers) == 0:
        return None
    rng = np.random.default_rng(seed)
    replicates = [auc_of(rng.choice(members, len(members)), rng.choice(nonmembers, len(nonmembers)))
                  for _ in range(resamples)]
    return _percentiles(np.asarray(replicates), level)


def auc_null_band(scores: np.ndarray, is_member: np.ndarray, *, level: float = NULL_LEVEL) -> Interval:
    """The central `level` band of the AUC under the null hypothesis that membership does not matter, i.e. of
    the AUCs reached when the member/non-member labels of these same scores are shuffled: the normal approximation
    of that permutation distribution, with its exact mean (0.5) and variance (the Mann-Whitney variance, corrected
    for ties, which saturated confidences produce). About 0.5 +- 2.58 / sqrt(6 n) for n samples per side."""
    n_members = int(is_member.sum())
    n_nonmembers = len(scores) - n_members
    total = n_members + n_nonmembers
    _, ties = np.unique(scores, return_counts=True)
    tie_term = float((ties.astype(np.float64) ** 3 - ties).sum()) / (total * (total - 1)) if total > 1 else 0.0
    variance_u = n_members * n_nonmembers / 12.0 * (total + 1 - tie_term)
    half_width = float(norm.ppf(0.5 + level / 2)) * np.sqrt(max(variance_u, 0.0)) / (n_members * n_nonmembers)
    return [float(0.5 - half_width), float(0.5 + half_width)]


def combine_cells(values: Sequence[float], intervals: Sequence[Interval | None], *, seed: int,
                  resamples: int = RESAMPLES, level: float = LEVEL) -> Interval | None:
    """Interval of the mean over benchmark cells (seeds, forget sets): cells are resampled, and each drawn cell
    contributes a value drawn from its own sampling distribution (normal, with the spread of its interval), so
    the result carries both the spread between cells and the sampling error within each. One cell: its own."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return None
    if len(values) == 1:
        return list(intervals[0]) if intervals[0] is not None else None
    z = 1.959963984540054  # the normal quantile of a 95% interval
    spreads = np.asarray([(i[1] - i[0]) / (2 * z) if i is not None else 0.0 for i in intervals])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), (resamples, len(values)))
    drawn = rng.normal(values[picks], spreads[picks])
    return _percentiles(drawn.mean(1), level)
