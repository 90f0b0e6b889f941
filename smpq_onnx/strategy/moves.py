"""Moves between feasible policies, shared by ``evolution`` and the search's refinement.

A mutation gives a geometric number of free units another legal option; repair is a knapsack:
the feasible policy that keeps the mutated units' new options (weight ``LOCK``) and as many of
the parent's other options as it can (weight 1 each; a small bonus per bit breaks ties toward
precision). A mutation that raises one unit so becomes a budget-neutral swap: the knapsack
lowers others to pay for it.
"""

from __future__ import annotations

import numpy as np

from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.selection import Infeasible, solve
from smpq_onnx.strategy.smpq import infeasible_error, knapsack_problem

LOCK = 1000.0
PRECISION_BONUS = 1e-3


def mutation(game: QuantizationGame, parent: list[int], free: list[int],
             rng: np.random.Generator) -> dict[int, int]:
    """Unit -> new option index for a geometric number of free units (1 with p 1/2, 2 with
    1/4, ...)."""
    count = min(len(free), int(rng.geometric(0.5)))
    units = rng.choice(free, size=count, replace=False)
    changes = {}
    for k in units:
        others = [i for i in range(len(game.units[int(k)].options)) if i != parent[int(k)]]
        changes[int(k)] = int(rng.choice(others))
    return changes


def repair(game: QuantizationGame, costs: CostModel, budget: Budget, parent: list[int],
           changes: dict[int, int]) -> list[int]:
    """The feasible policy nearest to ``parent`` with ``changes`` applied (option indices)."""
    utilities = []
    for k, unit in enumerate(game.units):
        wanted = changes.get(k, parent[k])
        row = np.array([PRECISION_BONUS * o.w_bits * o.a_bits / 64 for o in unit.options])
        row[wanted] += LOCK if k in changes else 1.0
        utilities.append(row)
    return feasible(game, costs, budget, utilities)


def random_feasible(game: QuantizationGame, costs: CostModel, budget: Budget,
                    rng: np.random.Generator) -> list[int]:
    """A random feasible policy: the knapsack's choice for normal random utilities."""
    return feasible(game, costs, budget, [rng.normal(size=len(u.options)) for u in game.units])


def feasible(game: QuantizationGame, costs: CostModel, budget: Budget,
             utilities: list[np.ndarray]) -> list[int]:
    """The knapsack's choice for ``utilities``; BudgetInfeasibleError when none fits."""
    try:
        return solve(knapsack_problem(game, costs, budget, utilities))
    except Infeasible as e:
        raise infeasible_error(game, costs, budget) from e
