"""Every evaluation is data: an additive surrogate fitted on all measured policies proposes.

Each policy the search measured is a real policy with a real score. The surrogate pools them:

    f(policy) ~ c + sum_k g_k(w_k) + h_k(a_k)     (split sides; g_k(option) for joint options)

a ridge regression on one-hot features of each unit's widths, its penalty chosen by the exact
leave-one-out error of ridge (hat matrix, no refits) over :data:`RIDGE_GRID`. Where a single
measurement carries the search set's noise in full, a unit's fitted term averages every
measured policy that shares its width, so its proposals are less the winner of one noisy
draw. The knapsack maximizes f under every budget; options the fit saw fewer than
:data:`MIN_SEEN` times (it knows nothing of them) are proposed only where nothing else fits.
Measured neutral on the benchmark's three models (README, "A surrogate on every
evaluation"): off unless ``SearchSettings.surrogate`` (``--surrogate N``) asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.selection import Infeasible, best_k
from smpq_onnx.strategy.smpq import knapsack_problem, policy_of

RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
MIN_SEEN = 2
"""Measured policies an option's width must appear in before the surrogate proposes it."""
MIN_POLICIES = 8
"""Fewer measured policies than this: no fit."""

Feature = tuple[int, str, int, int]
"""(unit, side "w"/"a"/"wa", w_bits, a_bits), the bits of the other side 0 for one side."""


@dataclass(frozen=True)
class AdditiveSurrogate:
    utilities: list[np.ndarray]
    """Per unit, the fitted utility of each of its options (in the unit's order); options the
    fit did not see enough are far below every seen one."""
    ridge: float
    loo_rmse: float
    """Leave-one-out error of the fit at ``ridge`` (the metric's units)."""
    spread: float
    """Standard deviation of the measured scores (what the fit explains part of)."""
    policies: int


def unit_features(game: QuantizationGame, k: int, option: Option) -> tuple[Feature, ...]:
    if game.split_sides:
        return (k, "w", option.w_bits, 0), (k, "a", 0, option.a_bits)
    return ((k, "wa", option.w_bits, option.a_bits),)


def fit_additive(game: QuantizationGame, measured: Mapping[Policy, float]
                 ) -> AdditiveSurrogate | None:
    """The ridge fit of ``measured`` (policies of ``game``: others are ignored); None with
    fewer than :data:`MIN_POLICIES` of them."""
    free = [k for k, unit in enumerate(game.units) if not unit.pinned]
    index: dict[Feature, int] = {}
    for k in free:
        for option in game.units[k].options:
            for feature in unit_features(game, k, option):
                index.setdefault(feature, len(index))
    rows, scores = [], []
    for policy, score in sorted(measured.items(), key=lambda item: item[0].sort_key()):
        if not all(policy.get(unit.layers[0]) in unit.options for unit in game.units):
            continue
        row = np.zeros(len(index))
        for k in free:
            for feature in unit_features(game, k, policy[game.units[k].layers[0]]):
                row[index[feature]] = 1.0
        rows.append(row)
        scores.append(score)
    if len(rows) < MIN_POLICIES or not index:
        return None
    x, y = np.array(rows), np.array(scores, dtype=float)
    seen = x.sum(axis=0)
    xc, yc = x - x.mean(axis=0), y - y.mean()
    gram = xc.T @ xc
    errors = []
    for ridge in RIDGE_GRID:
        hat = xc @ np.linalg.solve(gram + ridge * np.eye(len(index)), xc.T)
        # Centring costs each row 1/n of leverage, as the fitted intercept does.
        leverage = np.clip(1.0 - np.diag(hat) - 1.0 / len(y), 1e-9, None)
        errors.append(float(np.mean(((yc - hat @ yc) / leverage) ** 2)))
    best = int(np.argmin(errors))
    coef = np.linalg.solve(gram + RIDGE_GRID[best] * np.eye(len(index)), xc.T @ yc)
    known: list[list[float | None]] = []
    for k, unit in enumerate(game.units):
        values: list[float | None] = []
        for option in unit.options:
            features = [index[f] for f in unit_features(game, k, option)] if k in free else []
            values.append(sum(float(coef[i]) for i in features)
                          if all(seen[i] >= MIN_SEEN for i in features) else None)
        known.append(values)
    fitted = [[v for v in values if v is not None] for values in known]
    # Below any choice of seen options: lower than the lowest by every unit's range.
    floor = min((min(v) for v in fitted if v), default=0.0) - 1.0 - sum(
        max(v) - min(v) for v in fitted if v)
    utilities = [np.array([floor if v is None else v for v in values]) for values in known]
    return AdditiveSurrogate(utilities, RIDGE_GRID[best], errors[best] ** 0.5,
                             float(np.std(y)), len(y))


def surrogate_proposals(game: QuantizationGame, costs: CostModel, budget: Budget,
                        surrogate: AdditiveSurrogate, count: int) -> list[Policy]:
    """The ``count`` best policies of the surrogate under every budget."""
    try:
        choices = best_k(knapsack_problem(game, costs, budget, surrogate.utilities), count)
    except Infeasible:
        return []
    return [policy_of(game, choice) for choice in choices]

