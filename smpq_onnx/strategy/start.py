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
from smpq_onnx.strategy.baselines import context_utilities, top_options
from smpq_onnx.strategy.game import QuantizationGame, Unit
from smpq_onnx.strategy.selection import Infeasible, best_k
from smpq_onnx.strategy.smpq import infeasible_error, knapsack_problem, policy_of

START_KNAPSACK = 2
"""Knapsack policies of each kind measured beside the uniform ones for the first centre."""


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


def sensitivity_cost(game: QuantizationGame) -> int:
    """Evaluations :func:`side_sensitivity_policies` spends: the top, and per free unit each
    other width of each side alone (split sides) or each other option (joint options)."""
    def varied(unit: Unit) -> int:
        if game.split_sides:
            return len({o.w_bits for o in unit.options}) + len({o.a_bits for o in unit.options}) - 2
        return len(unit.options) - 1

    return 1 + sum(varied(unit) for unit in game.units if not unit.pinned)


def side_sensitivity_policies(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                              budget: Budget, count: int = START_KNAPSACK) -> list[Policy]:
    """The knapsack's ``count`` best policies under every budget for the context utilities
    around every unit's most precise option (each side lowered alone, the changes added up
    per option: :func:`~smpq_onnx.strategy.baselines.context_utilities`)."""
    utilities = context_utilities(game, evaluator, top_options(game))
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
