"""Statistics of final scores across seeds: median, IQM, bootstrap confidence intervals, rank-sum tests.

The point estimates and intervals follow rliable (Agarwal et al., 2021): the interquartile mean is
the mean of the middle 50% of runs (``scipy.stats.trim_mean`` with 25% cut from each end), and the
95% intervals are percentile bootstrap intervals over runs (rliable's default, 50,000 resamples);
with one task, rliable's stratified bootstrap is the plain bootstrap used here.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 50_000
CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
# Permutations of the runs behind a rank-sum p-value with tied scores (all of them when there are fewer).
PERMUTATIONS = 9999


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the scores left after cutting the lowest and highest 25%."""
    return stats.trim_mean(scores, 0.25, axis=axis)


def median_score(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """The median (a statistic for :func:`estimate`)."""
    return np.median(scores, axis=axis)


class Estimate(NamedTuple):
    """A point estimate with its bootstrap confidence interval (``nan`` bounds for fewer than 2 runs)."""

    value: float
    low: float
    high: float


def estimate(scores: list[float], statistic=iqm, seed: int = 0) -> Estimate:
    """``statistic`` of ``scores`` and its 95% percentile bootstrap interval."""
    values = np.asarray(scores, dtype=float)
    value = float(statistic(values))
    if len(values) < 2:
        return Estimate(value, math.nan, math.nan)
    # Identical scores: a zero-width interval is the right answer. Infinite ones (a run that never reached a
    # value, experiment --reach): the bootstrap's spread is undefined, its percentiles are not.
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (values,),
            statistic,
            n_resamples=BOOTSTRAP_RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    interval = result.confidence_interval
    return Estimate(value, float(interval.low), float(interval.high))


class ConditionStatistics(NamedTuple):
    runs: int
    median: Estimate
    iqm: Estimate
    mean: float


def condition_statistics(scores: list[float]) -> ConditionStatistics:
    """Median and IQM (with 95% CIs) and mean of one condition's final scores."""
    return ConditionStatistics(
        len(scores), estimate(scores, median_score), estimate(scores, iqm), float(np.mean(scores))
    )


def smallest_p_value(first_runs: int, second_runs: int) -> float:
    """The smallest two-sided p-value an exact rank-sum test can give for these sample sizes.

    It is reached when every run of one sample beats every run of the other: 2 / C(n1 + n2, n1).
    """
    return min(1.0, 2 / math.comb(first_runs + second_runs, first_runs))


class RankSumTest(NamedTuple):
    first: str
    second: str
    statistic: float
    p_value: float
    smallest_p_value: float


def _rank_sum(first: list[float], second: list[float]) -> Any:
    """scipy's two-sided Mann-Whitney U test; with tied scores, its p-value from the permutations of the runs.

    Without ties scipy's default is exact for small samples and the normal approximation beyond. With ties (whole
    numbers, a value never reached) that approximation can give a p below anything the permutations of so few runs
    allow; the permutation distribution handles ties exactly (every permutation up to :data:`PERMUTATIONS`, else that
    many drawn with a fixed seed, so that a summary is the same each time it is made).
    """
    untied = len(set(first) | set(second)) == len(first) + len(second)
    if untied or min(len(first), len(second)) < 2:  # a single run has no permutations to speak of (nor a test)
        return stats.mannwhitneyu(first, second, alternative="two-sided")
    permutations = stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(0))
    return stats.mannwhitneyu(first, second, alternative="two-sided", method=permutations)


def rank_sum_tests(scores: dict[str, list[float]]) -> list[RankSumTest]:
    """Two-sided Mann-Whitney U (Wilcoxon rank-sum) tests between every pair of conditions with runs."""
    tests = []
    for first, second in itertools.combinations([name for name, values in scores.items() if values], 2):
        result = _rank_sum(scores[first], scores[second])
        smallest = smallest_p_value(len(scores[first]), len(scores[second]))
        tests.append(RankSumTest(first, second, float(result.statistic), float(result.pvalue), smallest))
    return tests


def seeds_needed(significance: float = SIGNIFICANCE) -> int:
    """The fewest runs per condition for which two equal-sized conditions can reach p < ``significance``."""
    return next(n for n in itertools.count(1) if smallest_p_value(n, n) < significance)
