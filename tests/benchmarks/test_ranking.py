"""Rank statistics of benchmarks/compare.py on inputs small enough to check by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from harness.ranking import (
    argmax_disagreement,
    group_log_softmax,
    kendall_tau_b,
    mean_std,
    per_item_tau,
    tau_b_with_ci,
)


def test_tau_b_counts_concordant_minus_discordant_pairs() -> None:
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # pairs (1,2) and (1,3) concordant, (2,3) discordant: (2 - 1) / 3
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)


def test_tau_b_corrects_for_ties() -> None:
    # x ties on the first pair: 2 concordant pairs / sqrt((3 - 1) * (3 - 0))
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


def test_tau_b_of_a_constant_side_is_nan() -> None:
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert math.isnan(kendall_tau_b([5], [1]))
    with pytest.raises(ValueError, match="paired"):
        kendall_tau_b([1, 2], [1, 2, 3])


def test_bootstrap_interval_of_a_perfect_ranking_is_a_point() -> None:
    result = tau_b_with_ci(np.arange(10.0), np.arange(10.0) * 3, resamples=200, seed=1)
    assert result.tau == pytest.approx(1.0)
    assert result.low == pytest.approx(1.0) and result.high == pytest.approx(1.0)
    assert result.n == 10
    assert 190 <= result.resamples <= 200  # resamples of one repeated item are dropped


def test_bootstrap_interval_brackets_a_noisy_tau() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    result = tau_b_with_ci(x, y, resamples=1000, seed=0)
    assert result.tau == pytest.approx(kendall_tau_b(x, y))
    assert result.low < result.tau < result.high
    assert 0.1 < result.high - result.low < 0.6
    assert result.resamples == 1000


def test_argmax_disagreement_counts_ties_in_the_measurement_as_agreement() -> None:
    scores = [np.array([0.1, 0.5, 0.2]), np.array([3.0, 1.0]), np.array([0.0, 2.0])]
    measured = [np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0]), np.array([1.0, 4.0])]
    # item 1: score picks option 1 (measured 2 < 3): wrong; item 2: tie: right; item 3: right
    assert argmax_disagreement(scores, measured) == pytest.approx(1 / 3)


def test_argmax_disagreement_within_a_tolerance() -> None:
    scores = [np.array([0.1, 0.5, 0.2]), np.array([2.0, 1.0])]
    measured = [np.array([1.0, 2.9, 3.0]), np.array([0.5, 1.0])]
    # item 1 picks 2.9 (best 3.0), item 2 picks 0.5 (best 1.0)
    assert argmax_disagreement(scores, measured) == pytest.approx(1.0)
    assert argmax_disagreement(scores, measured, tolerance=0.2) == pytest.approx(0.5)
    assert argmax_disagreement(scores, measured, tolerance=0.5) == pytest.approx(0.0)


def test_argmax_disagreement_rejects_mismatched_items() -> None:
    with pytest.raises(ValueError):
        argmax_disagreement([np.array([1.0, 2.0])], [np.array([1.0])])
    with pytest.raises(ValueError):
        argmax_disagreement([], [])


def test_per_item_tau() -> None:
    taus = per_item_tau([np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0])],
                        [np.array([3.0, 2.0, 1.0]), np.array([7.0, 7.0])])
    assert taus[0] == pytest.approx(-1.0)
    assert math.isnan(taus[1])


def test_group_log_softmax() -> None:
    values = np.array([0.0, 0.0, 5.0, 1.0, 1.0, 1.0])
    out = group_log_softmax(values, [[0, 1], [3, 4, 5]])
    np.testing.assert_allclose(out, [-math.log(2), -math.log(2), 5.0, -math.log(3),
                                     -math.log(3), -math.log(3)])
    two = group_log_softmax(np.array([math.log(3.0), 0.0]), [[0, 1]])
    np.testing.assert_allclose(two, [math.log(3 / 4), math.log(1 / 4)])


def test_mean_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([4.0]) == (4.0, 0.0)
    mean, std = mean_std([])
    assert math.isnan(mean) and math.isnan(std)
