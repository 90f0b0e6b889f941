"""Shapley value estimators for a game given by a value function on coalitions.

``value(present)`` takes the indices of the present players (any order) and returns V(S).
Every estimator returns per-player values and standard errors. Exact enumeration serves
tests and tiny games; the sampling estimators are:

- ``permutation``: Monte Carlo permutation sampling (Castro et al. 2009, the SMPQ paper), with
  optional truncation: once V(S) falls below ``truncate_below`` the rest of the permutation
  gets zero marginals (the paper's threshold 0.5 of the reference value).
- ``antithetic``: permutations in pairs, pi and reversed pi (negatively correlated marginals).
- ``owen``: Owen's multilinear-extension sampling with stratified q and antithetic q <-> 1-q.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ValueFunction = Callable[[Sequence[int]], float]
Progress = Callable[[int, int], None]


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


def _walk(order: Sequence[int], value: ValueFunction, base: float,
          truncate_below: float | None) -> np.ndarray:
    """Marginal contributions along one permutation."""
    marginals = np.zeros(len(order))
    present: list[int] = []
    previous = base
    for player in order:
        present.append(player)
        current = value(present)
        marginals[player] = current - previous
        previous = current
        if truncate_below is not None and current < truncate_below:
            break
    return marginals


def permutation_shapley(n: int, value: ValueFunction, *, samples: int,
                        rng: np.random.Generator, antithetic: bool = False,
                        truncate_below: float | None = None,
                        progress: Progress | None = None) -> ShapleyEstimate:
    """``samples`` permutations (pairs of pi and reversed pi when ``antithetic``)."""
    base = value([])
    rows = []
    for sample in range(samples):
        order = [int(i) for i in rng.permutation(n)]
        if antithetic:
            pair = (_walk(order, value, base, truncate_below)
                    + _walk(order[::-1], value, base, truncate_below)) / 2
            rows.append(pair)
        else:
            rows.append(_walk(order, value, base, truncate_below))
        if progress is not None:
            progress(sample + 1, samples)
    return _summarize(np.array(rows))


def owen_shapley(n: int, value: ValueFunction, *, samples: int, rng: np.random.Generator,
                 progress: Progress | None = None) -> ShapleyEstimate:
    """``samples`` antithetic pairs of q-levels; each level costs about n + 1 evaluations."""
    rows = []
    for sample in range(samples):
        q = (sample + rng.random()) / samples
        coins = rng.random(n)
        pair = np.zeros(n)
        for inside in (coins < q, coins >= 1 - q):
            present = set(np.flatnonzero(inside).tolist())
            with_all = value(sorted(present))
            # Deepest players first: each neighbour differs from ``with_all`` in one unit,
            # and the evaluator reuses ``with_all``'s activations up to it (players are
            # ordered by unit, units by position in the network).
            for i in reversed(range(n)):
                if i in present:
                    pair[i] += with_all - value(sorted(present - {i}))
                else:
                    pair[i] += value(sorted(present | {i})) - with_all
        rows.append(pair / 2)
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
             progress: Progress | None = None) -> ShapleyEstimate:
    if name == "permutation":
        return permutation_shapley(n, value, samples=samples, rng=rng,
                                   truncate_below=truncate_below, progress=progress)
    if name == "antithetic":
        return permutation_shapley(n, value, samples=samples, rng=rng, antithetic=True,
                                   truncate_below=truncate_below, progress=progress)
    if name == "owen":
        return owen_shapley(n, value, samples=samples, rng=rng, progress=progress)
    raise ValueError(f"unknown estimator {name!r}; use one of {', '.join(ESTIMATORS)}")


def all_permutations_shapley(n: int, value: ValueFunction) -> np.ndarray:
    """Exact values by averaging over all n! orders (a second exact method, for tests)."""
    rows = [_walk(order, value, value([]), None) for order in itertools.permutations(range(n))]
    return np.mean(rows, axis=0)
