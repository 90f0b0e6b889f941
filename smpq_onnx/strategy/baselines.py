"""Baseline search methods beside SMPQ, on the same evaluator, game units and budgets.

- ``uniform``: of the single options for every unit that meet the budget at the highest
  bit product, the best measured.
- ``random``: random feasible policies (a knapsack over random utilities is feasible by
  construction), as many as the evaluation budget allows; the best is kept.
- ``context``: each unit's options varied alone around a uniform background (about 4 bits),
  the metric changes used as knapsack utilities (ALGORITHMS.md: matched exact Shapley values
  in a simulation).
- ``amp``: the post-training mixed-precision algorithm of AIMET (seed 003): per unit and
  candidate the metric with that unit alone lowered (others at the most precise option), a
  greedy Pareto curve lowering the unit/candidate with the least predicted loss per BOPs
  saved, and the first point on the curve that meets every budget.
- ``evolution``: regularized evolution over feasible policies (the benchmark's strong
  reference, :mod:`smpq_onnx.strategy.evolution`).
- ``dmpq``: EdMIPS-style differentiable search
  (:mod:`smpq_onnx.strategy.dmpq.search`; needs torch, which that module imports only when it runs).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import numpy as np

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.errors import BudgetInfeasibleError
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.moves import random_feasible
from smpq_onnx.strategy.smpq import (
    SearchResult,
    infeasible_error,
    policy_of,
    policy_with,
    select,
    uniform_candidates,
    unit_moved,
)

METHODS = ("shapley", "uniform", "random", "context", "amp", "dmpq", "evolution")


def _result(policy: Policy, score: float, game: QuantizationGame, evaluator: Evaluator,
            costs: CostModel, candidates: list[tuple[Policy, float]],
            phases: dict[str, float]) -> SearchResult:
    return SearchResult(policy, score, costs.cost(policy), evaluator.fp32_score, game, None,
                        None, None, candidates, phases)


def uniform_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                   budget: Budget) -> SearchResult:
    start = time.perf_counter()
    policies = uniform_candidates(game, costs, budget)
    candidates = list(zip(policies, evaluator.scores(policies), strict=True))
    if not candidates:
        raise BudgetInfeasibleError("no uniform option meets the budget; relax it or use a "
                                    "mixed-precision method")
    policy, score = max(candidates, key=lambda item: item[1])
    return _result(policy, score, game, evaluator, costs, candidates,
                   {"search_s": time.perf_counter() - start})


def random_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                  budget: Budget, *, evaluations: int, seed: int) -> SearchResult:
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    # Drawn before any is evaluated (no draw depends on a score): one batch.
    policies = [policy_of(game, random_feasible(game, costs, budget, rng))
                for _ in range(evaluations)]
    scored = list(zip(policies, evaluator.scores(policies), strict=True))
    policy, score = max(scored, key=lambda item: item[1])
    return _result(policy, score, game, evaluator, costs, [(policy, score)],
                   {"search_s": time.perf_counter() - start})


def _background(game: QuantizationGame) -> list[Option]:
    """Per unit, the option closest to 4 x 4 bits (ties: more activation bits)."""
    return [min(unit.options, key=lambda o: (abs(o.w_bits * o.a_bits - 16), -o.a_bits))
            for unit in game.units]


def context_utilities(game: QuantizationGame, evaluator: Evaluator,
                      background: Sequence[Option] | None = None) -> list[np.ndarray]:
    """Per unit, the metric change of each option varied alone around ``background`` (default:
    every unit nearest W4A4).

    Split-side games vary the weight and the activation bits separately (the option's utility
    is the sum of both changes); joint games vary the whole option. Independent of budgets.
    Costs one evaluation per distinct varied policy and one for the background.
    """
    background = list(_background(game) if background is None else background)

    def varied(k: int, option: Option) -> Policy:
        return unit_moved(game, background, k, option)

    # Per unit and option, the policies whose gains add up to its utility (one batch).
    trials = [[[varied(k, Option(option.w_bits, background[k].a_bits)),
                varied(k, Option(background[k].w_bits, option.a_bits))]
               if game.split_sides else [varied(k, option)] for option in unit.options]
              for k, unit in enumerate(game.units)]
    flat = [policy_with(game, background)] + [p for row in trials for cell in row for p in cell]
    score = dict(zip(flat, evaluator.scores(flat), strict=True))
    base = score[flat[0]]
    return [np.array([sum(score[p] - base for p in cell) for cell in row]) for row in trials]


def context_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                   budget: Budget, *, candidates: int = 3) -> SearchResult:
    start = time.perf_counter()
    utilities = context_utilities(game, evaluator)
    phases = {"sensitivity_s": time.perf_counter() - start}
    start = time.perf_counter()
    policy, score, scored = _select_with_utilities(game, costs, budget, utilities, evaluator,
                                                   candidates)
    phases["selection_s"] = time.perf_counter() - start
    return _result(policy, score, game, evaluator, costs, scored, phases)


def _select_with_utilities(game: QuantizationGame, costs: CostModel, budget: Budget,
                           utilities: list[np.ndarray], evaluator: Evaluator,
                           candidates: int) -> tuple[Policy, float, list[tuple[Policy, float]]]:
    return select(game, costs, budget, np.zeros(len(game.players)), evaluator,
                  candidates=candidates, utilities=utilities)


def amp_sensitivities(game: QuantizationGame, evaluator: Evaluator, *,
                      candidates: Collection[Option] | None = None) -> list[dict[Option, float]]:
    """Per unit, the metric drop of each candidate option with that unit alone lowered.

    The other units stay at their most precise option (which is always a candidate, drop 0).
    ``candidates`` restricts the options tried (AIMET's candidate list); None tries every
    legal option. Independent of budgets.
    """
    top = top_options(game)
    lowered: dict[tuple[int, Option], Policy] = {}
    for k, unit in enumerate(game.units):
        for option in unit.options:
            if option != top[k] and (candidates is None or option in candidates):
                lowered[(k, option)] = unit_moved(game, top, k, option)
    batch = [policy_with(game, top), *lowered.values()]  # independent of each other: one batch
    reference, *measured = evaluator.scores(batch)
    drop: list[dict[Option, float]] = [{top[k]: 0.0} for k in range(len(game.units))]
    for (k, option), score in zip(lowered, measured, strict=True):
        drop[k][option] = reference - score
    return drop


def amp_select(game: QuantizationGame, evaluator: Evaluator, costs: CostModel, budget: Budget,
               drop: list[dict[Option, float]]) -> tuple[Policy, float]:
    """Greedy Pareto curve over the options in ``drop``; the first point meeting the budget."""
    bops = [{o: sum(costs.layer_bops(name, o) for name in unit.layers) for o in unit.options}
            for unit in game.units]
    current = top_options(game)
    curve = [list(current)]
    while True:
        best = None
        for k, unit in enumerate(game.units):
            for option in unit.options:
                if option not in drop[k]:
                    continue
                saved = bops[k][current[k]] - bops[k][option]
                if saved <= 0:
                    continue
                ratio = (drop[k][option] - drop[k][current[k]]) / saved
                if best is None or ratio < best[0]:
                    best = (ratio, k, option)
        if best is None:
            break
        current[best[1]] = best[2]
        curve.append(list(current))
    for point in curve:
        policy = policy_with(game, point)
        if budget.fits(costs.cost(policy)):
            return policy, evaluator.evaluate(policy).score
    raise infeasible_error(game, costs, budget)


def amp_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
               budget: Budget) -> SearchResult:
    start = time.perf_counter()
    drop = amp_sensitivities(game, evaluator)
    phases = {"sensitivity_s": time.perf_counter() - start}
    start = time.perf_counter()
    policy, score = amp_select(game, evaluator, costs, budget, drop)
    phases["pareto_s"] = time.perf_counter() - start
    return _result(policy, score, game, evaluator, costs, [(policy, score)], phases)


def top_options(game: QuantizationGame) -> list[Option]:
    """Per unit, its most precise option (most w_bits * a_bits, then more activation bits)."""
    return [max(unit.options, key=lambda o: (o.w_bits * o.a_bits, o.a_bits))
            for unit in game.units]
