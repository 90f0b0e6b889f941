"""``evolution``: regularized evolution over feasible policies, the benchmark's strong reference.

Aging evolution (Real et al., 2019, "Regularized Evolution for Image Classifier Architecture
Search"): a population of feasible policies (random knapsack selections, as ``random``);
each cycle samples a tournament, mutates its best member (a few units take another legal
option), repairs the child to the budget and evaluates it; the child joins the population and
the oldest member leaves. The best policy ever evaluated is the result.

Children are bred ``BROOD`` at a time from the same population and evaluated as one batch
(an executor runs them side by side), then join in order; the initial population is one batch
too. The brood size is fixed, so the result does not depend on the executor or its workers.

Mutation and repair are :mod:`smpq_onnx.strategy.moves`. A child equal to a policy already
evaluated (or bred) is mutated again (up to ``RETRIES`` times) so that evaluations are not
spent on repeats. Deterministic for a seed.
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
"""Cycles in a row without a new policy after which the space counts as exhausted."""
BROOD = 8
"""Children bred from one population before any is evaluated."""
EVOLUTION_STREAM = 5_003
"""Its random stream apart from ``random``'s, whose first policies would otherwise be its
initial population."""


def evolution_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                     budget: Budget, *, evaluations: int, seed: int,
                     population: int = POPULATION, tournament: int = TOURNAMENT
                     ) -> SearchResult:
    start = time.perf_counter()
    rng = np.random.default_rng([seed, EVOLUTION_STREAM])
    free = [k for k, unit in enumerate(game.units) if len(unit.options) > 1]
    scored: dict[Policy, float] = {}
    alive: deque[tuple[list[int], float]] = deque()

    def evaluated(choices: list[list[int]]) -> list[float]:
        policies = [policy_of(game, choice) for choice in choices]
        scored.update(zip(policies, evaluator.scores(policies), strict=True))
        return [scored[policy] for policy in policies]

    founders: list[list[int]] = []
    distinct: set[Policy] = set()
    while len(founders) < min(population, evaluations) and len(distinct) < evaluations:
        founders.append(random_feasible(game, costs, budget, rng))
        distinct.add(policy_of(game, founders[-1]))
    alive.extend(zip(founders, evaluated(founders), strict=True))
    cycles = stalled = 0
    while len(scored) < evaluations and free and stalled < STALL_CYCLES:
        brood: list[list[int]] = []
        bred: set[Policy] = set()
        while len(brood) < min(BROOD, evaluations - len(scored)) and stalled < STALL_CYCLES:
            members = rng.choice(len(alive), size=min(tournament, len(alive)), replace=False)
            parent = max((alive[int(i)] for i in members), key=lambda member: member[1])[0]
            for _ in range(RETRIES):
                child = repair(game, costs, budget, parent, mutation(game, parent, free, rng))
                policy = policy_of(game, child)
                if policy not in scored and policy not in bred:
                    break
            new = policy not in scored and policy not in bred
            stalled = 0 if new else stalled + 1
            bred.add(policy)
            brood.append(child)
            cycles += 1
        for child, score in zip(brood, evaluated(brood), strict=True):
            alive.append((child, score))
            alive.popleft()
    policy, score = max(scored.items(), key=lambda item: item[1])
    return SearchResult(policy, score, costs.cost(policy), evaluator.fp32_score, game, None,
                        None, None, [(policy, score)], {"search_s": time.perf_counter() - start},
                        details={"population": population, "tournament": tournament,
                                 "cycles": cycles, "evaluated": len(scored)})
