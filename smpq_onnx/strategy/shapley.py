"""Shapley value estimators for a game given by a value function on coalitions.

``value(present)`` takes the indices of the present players (any order) and returns V(S).
Every estimator returns per-player values and standard errors. Exact enumeration serves
tests and tiny games; the sampling estimators are:

- ``permutation``: Monte Carlo permutation sampling (Castro et al. 2009, the SMPQ paper), with
  optional truncation: once V(S) falls below ``truncate_below`` the rest of the permutation
  gets zero marginals (the paper's threshold 0.5 of the reference value).
- ``antithetic``: permutations in pairs, pi and reversed pi (negatively correlated marginals).
- ``owen``: Owen's multilinear-extension sampling with stratified q and antithetic coins
  (q over a narrower band: a semivalue centred there).

The sampling estimators hand coalitions over in batches (``values``, default: ``value`` one by
one) so that an executor can evaluate them side by side: Owen's coalitions do not depend on
any value, so one round is one batch; a permutation walk goes in chunks of
``PERMUTATION_CHUNK`` (truncation may then evaluate up to a chunk past the cut, always the
same ones; one by one when only ``value`` is given). Batching never changes an estimate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ValueFunction = Callable[[Sequence[int]], float]
BatchValueFunction = Callable[[list[list[int]]], list[float]]
Progress = Callable[[int, int], None]

PERMUTATION_CHUNK = 8
"""Coalitions of a permutation walk evaluated as one batch (fixed, so that the evaluations
spent do not depend on the executor)."""


def one_by_one(value: ValueFunction) -> BatchValueFunction:
    return lambda coalitions: [value(c) for c in coalitions]


QBand = tuple[float, float]
FULL_BAND: QBand = (0.0, 1.0)
"""Owen's q over all of [0, 1]: the Shapley value. A narrower band weights the marginals of
coalitions whose players are present with probability q in it (a semivalue): the budget-local
search draws q where coalitions cost about the budget."""


@dataclass(frozen=True)
class ShapleyEstimate:
    phi: np.ndarray
    stderr: np.ndarray
    samples: int


def exact_shapley(n: int, value: ValueFunction) -> np.ndarray:
    """Exact values by enumerating all 2^n coalitions (n <= 16)."""
    if n > 16:
        raise ValueError("exact Shapley values need n <= 16 players")
    values = {}
    for mask in range(1 << n):
        values[mask] = value([i for i in range(n) if mask >> i & 1])
    phi = np.zeros(n)
    for i in range(n):
        bit = 1 << i
        for mask in range(1 << n):
            if mask & bit:
                continue
            size = bin(mask).count("1")
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            phi[i] += weight * (values[mask | bit] - values[mask])
    return phi


def band_semivalue(n: int, value: ValueFunction, band: QBand) -> np.ndarray:
    """Exact values over a q-band by enumeration (n <= 16): each marginal V(S+i) - V(S)
    weighted by q^|S| (1-q)^(n-1-|S|) averaged over q in ``band`` (the full band gives the
    Shapley value: that average is |S|! (n-1-|S|)! / n!)."""
    if n > 16:
        raise ValueError("exact values need n <= 16 players")
    low, high = band
    if high - low < 1e-12:
        qs, ws = np.array([low]), np.array([1.0])
    else:  # Gauss-Legendre: exact for these polynomials of degree n - 1
        nodes, weights = np.polynomial.legendre.leggauss(n + 1)
        qs, ws = low + (high - low) * (nodes + 1) / 2, weights / 2
    size_weight = [float(np.sum(ws * qs**k * (1 - qs) ** (n - 1 - k))) for k in range(n)]
    values = {mask: value([i for i in range(n) if mask >> i & 1]) for mask in range(1 << n)}
    phi = np.zeros(n)
    for i in range(n):
        bit = 1 << i
        for mask in range(1 << n):
            if not mask & bit:
                phi[i] += size_weight[bin(mask).count("1")] * (values[mask | bit] - values[mask])
    return phi


def _walk(order: Sequence[int], values: BatchValueFunction, base: float,
          truncate_below: float | None, chunk: int = PERMUTATION_CHUNK) -> np.ndarray:
    """Marginal contributions along one permutation (its prefixes evaluated ``chunk`` at a
    time, the last chunk up to the truncation)."""
    marginals = np.zeros(len(order))
    previous = base
    for start in range(0, len(order), chunk):
        stop = min(start + chunk, len(order))
        prefixes = [list(order[:end]) for end in range(start + 1, stop + 1)]
        for player, current in zip(order[start:stop], values(prefixes), strict=True):
            marginals[player] = current - previous
            previous = current
            if truncate_below is not None and current < truncate_below:
                return marginals
    return marginals


def permutation_shapley(n: int, value: ValueFunction, *, samples: int,
                        rng: np.random.Generator, antithetic: bool = False,
                        truncate_below: float | None = None,
                        progress: Progress | None = None,
                        values: BatchValueFunction | None = None) -> ShapleyEstimate:
    """``samples`` permutations (pairs of pi and reversed pi when ``antithetic``)."""
    batch = values or one_by_one(value)
    chunk = PERMUTATION_CHUNK if values is not None else 1
    base = batch([[]])[0]
    rows = []
    for sample in range(samples):
        order = [int(i) for i in rng.permutation(n)]
        if antithetic:
            pair = (_walk(order, batch, base, truncate_below, chunk)
                    + _walk(order[::-1], batch, base, truncate_below, chunk)) / 2
            rows.append(pair)
        else:
            rows.append(_walk(order, batch, base, truncate_below, chunk))
        if progress is not None:
            progress(sample + 1, samples)
    return _summarize(np.array(rows))


def owen_coalitions(n: int, samples: int, rng: np.random.Generator, *,
                    band: QBand = FULL_BAND, paired: bool = True) -> list[list[list[int]]]:
    """Per q-level (two per sample when ``paired``: the coins under q and the coins at or
    above 1 - q, both present with probability q), its coalition followed by each player's
    neighbour (that player toggled), deepest player first: each neighbour differs from the
    level's coalition in one unit, and the evaluator reuses that coalition's activations up to
    it (players are ordered by unit, units by position in the network). q is stratified over
    ``band``."""
    low, high = band
    levels = []
    for sample in range(samples):
        q = low + (high - low) * (sample + rng.random()) / samples
        coins = rng.random(n)
        for inside in (coins < q, coins >= 1 - q)[:2 if paired else 1]:
            present = set(np.flatnonzero(inside).tolist())
            levels.append([sorted(present)] + [sorted(present ^ {i})
                                               for i in reversed(range(n))])
    return levels


def owen_shapley(n: int, value: ValueFunction, *, samples: int, rng: np.random.Generator,
                 progress: Progress | None = None,
                 values: BatchValueFunction | None = None, band: QBand = FULL_BAND,
                 paired: bool = True) -> ShapleyEstimate:
    """``samples`` antithetic pairs of q-levels (single levels unless ``paired``); each level
    costs about n + 1 evaluations, all of them one batch."""
    levels = owen_coalitions(n, samples, rng, band=band, paired=paired)
    flat = (values or one_by_one(value))([c for level in levels for c in level])
    per_sample = 2 if paired else 1
    rows = []
    for sample in range(samples):
        row = np.zeros(n)
        for side in range(per_sample * sample, per_sample * (sample + 1)):
            scores = flat[side * (n + 1):(side + 1) * (n + 1)]
            present = set(levels[side][0])
            with_all = scores[0]
            for i, toggled in zip(reversed(range(n)), scores[1:], strict=True):
                row[i] += with_all - toggled if i in present else toggled - with_all
        rows.append(row / per_sample)
        if progress is not None:
            progress(sample + 1, samples)
    return _summarize(np.array(rows))


def _summarize(rows: np.ndarray) -> ShapleyEstimate:
    count = len(rows)
    phi = rows.mean(axis=0)
    stderr = rows.std(axis=0, ddof=1) / math.sqrt(count) if count > 1 else np.full(
        rows.shape[1], np.inf)
    return ShapleyEstimate(phi, stderr, count)


ESTIMATORS = ("permutation", "antithetic", "owen")


def estimate(name: str, n: int, value: ValueFunction, *, samples: int,
             rng: np.random.Generator, truncate_below: float | None = None,
             progress: Progress | None = None,
             values: BatchValueFunction | None = None, band: QBand = FULL_BAND,
             paired: bool = True) -> ShapleyEstimate:
    """``band`` and ``paired``: Owen's q-band and level pairing (other estimators: the full
    band, paired as they are)."""
    if name == "permutation":
        return permutation_shapley(n, value, samples=samples, rng=rng,
                                   truncate_below=truncate_below, progress=progress,
                                   values=values)
    if name == "antithetic":
        return permutation_shapley(n, value, samples=samples, rng=rng, antithetic=True,
                                   truncate_below=truncate_below, progress=progress,
                                   values=values)
    if name == "owen":
        return owen_shapley(n, value, samples=samples, rng=rng, progress=progress,
                            values=values, band=band, paired=paired)
    raise ValueError(f"unknown estimator {name!r}; use one of {', '.join(ESTIMATORS)}")


def all_permutations_shapley(n: int, value: ValueFunction) -> np.ndarray:
    """Exact values by averaging over all n! orders (a second exact method, for tests)."""
    rows = [_walk(order, one_by_one(value), value([]), None)
            for order in itertools.permutations(range(n))]
    return np.mean(rows, axis=0)
