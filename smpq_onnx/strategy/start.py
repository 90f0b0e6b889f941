"""Where the budget-local search starts: measured policies that fit the budget.

- the uniform policies that fit (the guard's candidates);
- the knapsack's most-bits policies (:func:`most_bits_policies`, no evaluation spent);
- the knapsack on sensitivities measured from the top (:func:`sensitivity_policies`): AIMET
  AMP's phase-1 measurement, first per unit side (each side lowered alone from a network at
  its most bits, the changes added up per option), then per joint option near the knapsack's
  choices (a unit's weight and activation widths interact: the side sums miss it); with
  AMP's greedy walk on the same utilities beside the knapsack.

The best measured of them is the first window's centre.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.errors import BudgetInfeasibleError
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.baselines import amp_select, context_utilities, top_options
from smpq_onnx.strategy.game import QuantizationGame, Unit
from smpq_onnx.strategy.selection import Infeasible, best_k
from smpq_onnx.strategy.smpq import (
    infeasible_error,
    knapsack_problem,
    policy_of,
    policy_with,
    unit_moved,
)
from smpq_onnx.strategy.window import unit_window

START_KNAPSACK = 2
"""Knapsack policies of each kind measured beside the uniform ones for the first centre."""
JOINT_ROUNDS = 3
"""Most rounds of joint cells measured around the sensitivity knapsack's choices (they stop
earlier when its choices need no new cell: 89-100 cells in all at the depthwise Fashion net's
W4A4, beside the side table's 133)."""


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


def sensitivity_policies(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                         budget: Budget, *, evaluations: int,
                         count: int = START_KNAPSACK) -> list[Policy]:
    """The knapsack's ``count`` best policies under every budget for sensitivities measured
    from the top (every unit at its most precise option), then refined where they decide.

    First the context utilities around the top (each side lowered alone, the changes added
    up per option: :func:`~smpq_onnx.strategy.baselines.context_utilities`); then, up to
    :data:`JOINT_ROUNDS` times while a round's cells fit in ``evaluations`` (the table's
    included), each unit alone at every joint option of its one-step window around the
    knapsack's choices, whose measured change replaces the side sum, and the knapsack again.
    Every round's choices are returned, and AMP's greedy walk on the last utilities
    (:func:`greedy_walk`; on the depthwise Fashion net it found AMP's own W4A4 policy where
    the knapsack did not: README, "Joint cells for the sensitivity start"). Where the side
    sums are optimistic (a unit's two widths lowered together lose more than apart) and the
    rounds end for want of new cells, the last knapsack's best is the best policy: its
    options are measured, every other policy's utility is at least its true one."""
    top = top_options(game)
    utilities = context_utilities(game, evaluator, top)
    try:
        choices = best_k(knapsack_problem(game, costs, budget, utilities), count)
    except Infeasible:
        return []
    policies = [policy_of(game, c) for c in choices]
    base = evaluator.evaluate(policy_with(game, top)).score
    left = evaluations - sensitivity_cost(game)
    joint: dict[tuple[int, Option], float] = {}
    for _ in range(JOINT_ROUNDS):
        cells = {(k, o): unit_moved(game, top, k, o)
                 for k, unit in enumerate(game.units) if not unit.pinned
                 for c in choices for o in unit_window(game, unit, unit.options[c[k]])[1]
                 if o != top[k] and (k, o) not in joint}
        if not cells or len(cells) > left:
            break
        left -= len(cells)
        joint.update(zip(cells, (score - base for score in evaluator.scores(list(cells.values()))),
                         strict=True))
        utilities = [np.array([joint.get((k, o), side) for o, side in zip(unit.options, row,
                                                                          strict=True)])
                     for k, (unit, row) in enumerate(zip(game.units, utilities, strict=True))]
        choices = best_k(knapsack_problem(game, costs, budget, utilities), count)
        policies += [p for p in (policy_of(game, c) for c in choices) if p not in policies]
    walked = greedy_walk(game, evaluator, costs, budget, utilities)
    return [*policies, walked] if walked is not None and walked not in policies else policies


def greedy_walk(game: QuantizationGame, evaluator: Evaluator, costs: CostModel, budget: Budget,
                utilities: list[np.ndarray]) -> Policy | None:
    """AIMET AMP's phase 2 on ``utilities`` (:func:`~smpq_onnx.strategy.baselines.amp_select`:
    from the top, lower the option that loses least per BOPs saved, stop at the first point
    that fits); one evaluation. None where no point of the walk fits (a memory budget the
    BOPs-ordered walk misses)."""
    drop = [{o: -float(u) for o, u in zip(unit.options, row, strict=True)}
            for unit, row in zip(game.units, utilities, strict=True)]
    try:
        return amp_select(game, evaluator, costs, budget, drop)[0]
    except BudgetInfeasibleError:
        return None


def starting_center(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                    budget: Budget, uniforms: Sequence[Policy], *, most_bits: bool = True,
                    sensitivity: int = 0) -> list[Option]:
    """The best measured of ``uniforms`` (the uniform policies that fit), with ``most_bits``
    of :func:`most_bits_policies` (a uniform policy collapses where one layer type is far more
    sensitive than the others: 59 % top-1 against 87 % on the depthwise Fashion net at uniform
    W3A4's BOPs) and with :func:`sensitivity_policies` where ``sensitivity`` (the evaluations
    it may spend) covers at least its side table."""
    starts = list(uniforms)
    if most_bits or not starts:
        starts += [p for p in most_bits_policies(game, costs, budget) if p not in starts]
    if sensitivity >= sensitivity_cost(game):
        starts += [p for p in sensitivity_policies(game, evaluator, costs, budget,
                                                   evaluations=sensitivity) if p not in starts]
    scores = evaluator.scores(starts)
    best = starts[int(np.argmax(scores))]
    return [best[unit.layers[0]] for unit in game.units]
