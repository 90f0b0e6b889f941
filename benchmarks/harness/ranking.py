"""Rank statistics of the comparison benchmark, pure numpy/scipy (no models, no evaluations).

- :func:`tau_b_with_ci`: Kendall tau-b between a predicted score and a measured metric, with a
  percentile bootstrap interval over resampled items (policies).
- :func:`argmax_disagreement`: per item (a unit, or one side of a unit), whether the option a
  score ranks first is among the options the measurement ranks first (options tied with the
  best, or within a tolerance of it, all count as best).
- :func:`per_item_tau`: tau-b between a score and the measurement within each item (NaN where
  either is constant, e.g. every option measured equal).
- :func:`group_log_softmax`: log-softmax of values within groups (DMPQ alpha -> log P(option)).
- :func:`mean_std`: mean and sample standard deviation (ddof 1; 0 for a single value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau


@dataclass(frozen=True)
class TauInterval:
    tau: float
    """Kendall tau-b on all items (NaN when a side is constant)."""
    low: float
    high: float
    """Percentile bootstrap interval (NaN when no resample had a defined tau)."""
    n: int
    resamples: int
    """Resamples with a defined tau (constant resamples are dropped)."""


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall tau-b (ties corrected on both sides); NaN if either side is constant."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"tau needs paired values, got {len(a)} and {len(b)}")
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(kendalltau(a, b, variant="b").statistic)


def tau_b_with_ci(predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray,
                  *, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> TauInterval:
    """tau-b of (predicted, measured) and its bootstrap interval over resampled items."""
    x, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    tau = kendall_tau_b(x, y)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(resamples):
        index = rng.integers(len(x), size=len(x))
        value = kendall_tau_b(x[index], y[index])
        if not math.isnan(value):
            boot.append(value)
    if not boot:
        return TauInterval(tau, math.nan, math.nan, len(x), 0)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return TauInterval(tau, float(low), float(high), len(x), len(boot))


def argmax_disagreement(scores: Sequence[np.ndarray], measured: Sequence[np.ndarray], *,
                        tolerance: float = 0.0) -> float:
    """Share of items whose top-scored option (first on ties) is not a measured best option.

    A measured best option is one within ``tolerance`` of the item's best measurement (0:
    exact ties only; a sampling standard error makes options the measurement cannot tell
    apart count as best).
    """
    if len(scores) != len(measured) or not scores:
        raise ValueError("need one score array and one measurement array per item")
    wrong = 0
    for score, truth in zip(scores, measured, strict=True):
        s, t = np.asarray(score, dtype=float), np.asarray(truth, dtype=float)
        if s.shape != t.shape:
            raise ValueError(f"item with {s.shape} scores and {t.shape} measurements")
        wrong += int(t[int(np.argmax(s))] < t.max() - tolerance)
    return wrong / len(scores)


def per_item_tau(scores: Sequence[np.ndarray], measured: Sequence[np.ndarray]) -> list[float]:
    """tau-b within each item (NaN where undefined)."""
    return [kendall_tau_b(s, t) for s, t in zip(scores, measured, strict=True)]


def group_log_softmax(values: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``values`` with a log-softmax taken within each group of indices (others unchanged)."""
    out = np.asarray(values, dtype=float).copy()
    for group in groups:
        index = np.asarray(group, dtype=int)
        part = out[index]
        shifted = part - part.max()
        out[index] = shifted - math.log(float(np.exp(shifted).sum()))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaNs for none."""
    array = np.asarray(values, dtype=float)
    if len(array) == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0
