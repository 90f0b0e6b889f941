"""Pairwise interactions measured at a policy that fits the budget.

First-order utilities add up, so they cannot see that two sensitive units lowered together
fail worse than the sum of their losses (CLADO, 2023, measures such pairs from the
full-precision network). Here they are measured where the budget lives: at the knapsack's
proposal ``c``, for the ``K`` units it lowers most from the window's top (by the first-order
table), each raised alone to the top and every pair raised together. The mixed second
difference

    D[k, m] = f(c) - f(c, k up) - f(c, m up) + f(c, k and m up)

is exactly the pair term of a first- plus second-order model whose pair terms read "k at
c_k and m at c_m": the unary terms and every other pair cancel. The terms join the knapsack
as quadratic terms (linearized in :mod:`.selection`) and the re-solved program proposes
policies that avoid a combination which hurts more than the sum, under every budget at once.

Cost: ``K`` single raises and ``K (K - 1) / 2`` pair raises (:func:`pair_cost`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np

from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.selection import best_k
from smpq_onnx.strategy.smpq import choice_of, knapsack_problem, policy_of

PairTerms = dict[tuple[int, int, int, int], float]
"""(unit k, option index of k, unit m, option index of m) -> value added when both hold."""


def pair_cost(units: int) -> int:
    """Evaluations of one measurement among ``units`` units (besides ``c`` itself)."""
    return units + units * (units - 1) // 2


def most_lowered(game: QuantizationGame, choice: Sequence[int], top: Sequence[int],
                 utilities: Sequence[np.ndarray], count: int) -> list[int]:
    """The ``count`` unpinned units ``choice`` puts below ``top`` that lose most by the
    first-order ``utilities`` (ties: the earlier unit)."""
    lowered = [k for k, unit in enumerate(game.units)
               if not unit.pinned and choice[k] != top[k]]
    loss = {k: float(utilities[k][top[k]] - utilities[k][choice[k]]) for k in lowered}
    return sorted(lowered, key=lambda k: (-loss[k], k))[:count]


def measured_pairs(game: QuantizationGame, score_many: Callable[[list[Policy]], list[float]],
                   choice: Sequence[int], top: Sequence[int], units: Sequence[int]
                   ) -> PairTerms:
    """The mixed second differences at ``choice`` of every pair of ``units``, each unit
    raised to its ``top`` option (one batch of :func:`pair_cost` policies plus ``choice``)."""
    def raised(*raise_units: int) -> Policy:
        moved = list(choice)
        for k in raise_units:
            moved[k] = top[k]
        return policy_of(game, moved)

    pairs = list(combinations(units, 2))
    policies = [raised(), *(raised(k) for k in units), *(raised(k, m) for k, m in pairs)]
    scores = score_many(policies)
    base, single = scores[0], dict(zip(units, scores[1:1 + len(units)], strict=True))
    both = scores[1 + len(units):]
    return {(k, choice[k], m, choice[m]): base - single[k] - single[m] + value
            for (k, m), value in zip(pairs, both, strict=True)}


def interaction_proposals(game: QuantizationGame, score_many: Callable[[list[Policy]],
                                                                       list[float]],
                          costs: CostModel, budget: Budget, utilities: list[np.ndarray],
                          proposal: Policy, *, units: int, count: int
                          ) -> tuple[list[Policy], PairTerms]:
    """The ``count`` best policies under every budget for ``utilities`` plus the pair terms
    measured at ``proposal`` among its ``units`` most lowered units (none when fewer than two
    are lowered), and the terms."""
    ceiling = game.realize(range(len(game.players)))
    top = choice_of(game, ceiling)
    choice = choice_of(game, proposal)
    lowered = most_lowered(game, choice, top, utilities, units)
    if len(lowered) < 2:
        return [], {}
    terms = measured_pairs(game, score_many, choice, top, lowered)
    problem = dataclasses.replace(knapsack_problem(game, costs, budget, utilities), pairs=terms)
    return [policy_of(game, c) for c in best_k(problem, count)], terms
