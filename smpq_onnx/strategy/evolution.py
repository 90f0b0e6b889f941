"""``evolution``: regularized evolution over feasible policies, the benchmark's strong reference.

Aging evolution (Real et al., 2019, "Regularized Evolution for Image Classifier Architecture
Search"): a population of feasible policies (random knapsack selections, as ``random``);
each cycle samples a tournament, mutates its best member (a few units take another legal
option), repairs the child to the budget and evaluates it; the child joins the population and
the oldest member leaves. The best policy ever evaluated is the result.

Mutation and repair are :mod:`smpq_onnx.strategy.moves`. A child equal to a policy already
evaluated is mutated again (up to ``RETRIES`` times) so that evaluations are not spent on
repeats. Deterministic for a seed.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.moves import mutation, random_feasible, repair
from smpq_onnx.strategy.smpq import SearchResult, policy_of

POPULATION = 24
TOURNAMENT = 6
RETRIES = 8
STALL_CYCLES = 200
EVOLUTION_STREAM = 5_003
"""Its random stream apart from ``random``'s, whose first policies would otherwise be its
initial population."""
"""Cycles in a row without a new policy after which the space counts as exhausted."""


def evolution_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                     budget: Budget, *, evaluations: int, seed: int,
                     population: int = POPULATION, tournament: int = TOURNAMENT
                     ) -> SearchResult:
    start = time.perf_counter()
    rng = np.random.default_rng([seed, EVOLUTION_STREAM])
    free = [k for k, unit in enumerate(game.units) if len(unit.options) > 1]
    scored: dict[Policy, float] = {}
    alive: deque[tuple[list[int], float]] = deque()

    def evaluate(choice: list[int]) -> float:
        policy = policy_of(game, choice)
        if policy not in scored:
            scored[policy] = evaluator.evaluate(policy).score
        return scored[policy]

    while len(alive) < min(population, evaluations) and len(scored) < evaluations:
        choice = random_feasible(game, costs, budget, rng)
        alive.append((choice, evaluate(choice)))
    cycles = stalled = 0
    while len(scored) < evaluations and free and stalled < STALL_CYCLES:
        members = rng.choice(len(alive), size=min(tournament, len(alive)), replace=False)
        parent = max((alive[int(i)] for i in members), key=lambda member: member[1])[0]
        for _ in range(RETRIES):
            child = repair(game, costs, budget, parent, mutation(game, parent, free, rng))
            if policy_of(game, child) not in scored:
                break
        known = len(scored)
        alive.append((child, evaluate(child)))
        alive.popleft()
        stalled = stalled + 1 if len(scored) == known else 0
        cycles += 1
    policy, score = max(scored.items(), key=lambda item: item[1])
    return SearchResult(policy, score, costs.cost(policy), evaluator.fp32_score, game, None,
                        None, None, [(policy, score)], {"search_s": time.perf_counter() - start},
                        details={"population": population, "tournament": tournament,
                                 "cycles": cycles, "evaluated": len(scored)})
