"""Where the budget-local search starts: measured policies that fit the budget.

- the uniform policies that fit (the guard's candidates);
- the knapsack's most-bits policies (:func:`most_bits_policies`, no evaluation spent);
- optionally the knapsack on side sensitivities (:func:`side_sensitivity_policies`): AIMET
  AMP's phase-1 measurement per unit side, each side lowered alone from a network at its most
  bits, the changes added up per option.

The best measured of them is the first window's centre.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame, Unit
from smpq_onnx.strategy.selection import Infeasible, best_k
from smpq_onnx.strategy.smpq import (
    infeasible_error,
    knapsack_problem,
    policy_of,
    policy_with,
    unit_moved,
)

START_KNAPSACK = 2
"""Knapsack policies of each kind measured beside the uniform ones for the first centre."""
UNMEASURED = -1e3
"""Knapsack utility of an option no sensitivity measured (kept out of the start)."""


def most_bits_policies(game: QuantizationGame, costs: CostModel, budget: Budget,
                       count: int = START_KNAPSACK) -> list[Policy]:
    """The ``count`` policies with the most bits (sum over units of log2 w·a, every unit alike)
    that the knapsack fits under every budget: cheap layers (depthwise, stem, classifier) get
    many bits, costly ones few, with no evaluation spent."""
    utilities = [np.log2([o.w_bits * o.a_bits for o in unit.options]) for unit in game.units]
    try:
        return [policy_of(game, choice) for choice in
                best_k(knapsack_problem(game, costs, budget, utilities), count)]
    except Infeasible as e:
        raise infeasible_error(game, costs, budget) from e


def _top(unit: Unit) -> Option:
    return max(unit.options, key=lambda o: (o.w_bits * o.a_bits, o.a_bits, o.w_bits))


def sensitivity_trials(game: QuantizationGame) -> dict[tuple[int, str, int], Policy]:
    """Every unit at its most bits, then per unit side each other width alone, keyed
    (unit, side, width); a game of joint options moves each option alone (side "wa", width
    the option's index). Pinned units keep their pin."""
    top = [_top(unit) for unit in game.units]
    trials: dict[tuple[int, str, int], Policy] = {}
    for k, unit in enumerate(game.units):
        if unit.pinned:
            continue
        high = top[k]
        if not game.split_sides:
            trials.update({(k, "wa", i): unit_moved(game, top, k, o)
                           for i, o in enumerate(unit.options) if o != high})
            continue
        for w in sorted({o.w_bits for o in unit.options} - {high.w_bits}):
            if Option(w, high.a_bits) in unit.options:
                trials[(k, "w", w)] = unit_moved(game, top, k, Option(w, high.a_bits))
        for a in sorted({o.a_bits for o in unit.options} - {high.a_bits}):
            if Option(high.w_bits, a) in unit.options:
                trials[(k, "a", a)] = unit_moved(game, top, k, Option(high.w_bits, a))
    return trials


def sensitivity_cost(game: QuantizationGame) -> int:
    """Evaluations :func:`side_sensitivity_policies` spends: the top and each trial."""
    return len(sensitivity_trials(game)) + 1


def side_sensitivity_policies(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                              budget: Budget, count: int = START_KNAPSACK) -> list[Policy]:
    """The knapsack's ``count`` best policies under every budget for the measured single-side
    changes added up per option (an option with a side nobody measured is left out)."""
    top = [_top(unit) for unit in game.units]
    trials = sensitivity_trials(game)
    base, *scores = evaluator.scores([policy_with(game, top), *trials.values()])
    change = {key: score - base for key, score in zip(trials, scores, strict=True)}

    def side(k: int, name: str, width: int, at_top: bool) -> float:
        return 0.0 if at_top else change.get((k, name, width), UNMEASURED)

    utilities = []
    for k, unit in enumerate(game.units):
        high = top[k]
        if unit.pinned:
            utilities.append(np.zeros(len(unit.options)))
        elif game.split_sides:
            utilities.append(np.array([
                side(k, "w", o.w_bits, o.w_bits == high.w_bits)
                + side(k, "a", o.a_bits, o.a_bits == high.a_bits) for o in unit.options]))
        else:
            utilities.append(np.array([side(k, "wa", i, o == high)
                                       for i, o in enumerate(unit.options)]))
    try:
        return [policy_of(game, c)
                for c in best_k(knapsack_problem(game, costs, budget, utilities), count)]
    except Infeasible:
        return []


def starting_center(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                    budget: Budget, uniforms: Sequence[Policy], *, most_bits: bool = True,
                    sensitivity: bool = False) -> list[Option]:
    """The best measured of ``uniforms`` (the uniform policies that fit), with ``most_bits``
    of :func:`most_bits_policies` (a uniform policy collapses where one layer type is far more
    sensitive than the others: 59 % top-1 against 87 % on the depthwise Fashion net at uniform
    W3A4's BOPs) and with ``sensitivity`` of :func:`side_sensitivity_policies`."""
    starts = list(uniforms)
    if most_bits or not starts:
        starts += [p for p in most_bits_policies(game, costs, budget) if p not in starts]
    if sensitivity:
        starts += [p for p in side_sensitivity_policies(game, evaluator, costs, budget)
                   if p not in starts]
    scores = evaluator.scores(starts)
    best = starts[int(np.argmax(scores))]
    return [best[unit.layers[0]] for unit in game.units]
