"""Measured refinement: evaluations left after selection spent on real moves near the policy.

A hill climb on the search's own metric: each step mutates the incumbent ``BROOD`` times and
repairs each to the budget (:mod:`smpq_onnx.strategy.moves`: raising a unit makes the knapsack
lower others, a budget-neutral swap), evaluates the moves as one batch (side by side on an
executor; the brood size is fixed, so the climb does not depend on the workers) and keeps the
best if it scores higher. It stops when its evaluations are spent or ``STALL_STEPS`` moves in
a row were already tried.
The selection's best policy stays the answer unless a move beats it on the emitted model too.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.moves import mutation, repair
from smpq_onnx.strategy.smpq import SearchResult, choice_of, policy_of

STALL_STEPS = 200
BROOD = 4
"""Moves from one incumbent evaluated as one batch."""
REFINE_STREAM = 7_001  # the refinement's random stream, apart from the estimator's


def hill_climb(game: QuantizationGame, evaluator: Evaluator, costs: CostModel, budget: Budget,
               start: Policy, *, evaluations: int, seed: int) -> tuple[Policy, int, int]:
    """(best policy found, evaluations spent, moves accepted)."""
    before = evaluator.n_evaluations  # scoring the start on the search's engine counts too
    choice = choice_of(game, start)
    best = evaluator.evaluate(start).score
    free = [k for k, unit in enumerate(game.units) if len(unit.options) > 1]
    rng = np.random.default_rng([seed, REFINE_STREAM])
    tried, accepted, stalled = {start}, 0, 0
    while evaluator.n_evaluations - before < evaluations and free and stalled < STALL_STEPS:
        left = evaluations - (evaluator.n_evaluations - before)
        moves: list[tuple[list[int], Policy]] = []
        while len(moves) < min(BROOD, left) and stalled < STALL_STEPS:
            child = repair(game, costs, budget, choice, mutation(game, choice, free, rng))
            policy = policy_of(game, child)
            if policy in tried:
                stalled += 1
                continue
            stalled = 0
            tried.add(policy)
            moves.append((child, policy))
        if not moves:
            break
        measured = evaluator.scores([policy for _, policy in moves])
        top = int(np.argmax(measured))
        if measured[top] > best:
            choice, best, accepted = moves[top][0], measured[top], accepted + 1
    return policy_of(game, choice), evaluator.n_evaluations - before, accepted


def refined(result: SearchResult, evaluator: Evaluator, costs: CostModel, budget: Budget, *,
            evaluations: int, seed: int) -> SearchResult:
    """``result`` after a hill climb from its policy, if the climb's end scores higher on the
    emitted model (deployed engine) than the selection's best."""
    start = time.perf_counter()
    policy, spent, accepted = hill_climb(result.game, evaluator, costs, budget, result.policy,
                                         evaluations=evaluations, seed=seed)
    candidates = list(result.candidates)
    chosen, score = result.policy, result.score
    if policy != result.policy:
        deployed = evaluator.evaluate_deployed(policy).score
        candidates.append((policy, deployed))
        if deployed > score:
            chosen, score = policy, deployed
    details = {**result.details, "refine_evaluations": spent, "refine_accepted": accepted,
               "refine_kept": chosen != result.policy}
    phases = {**result.phases, "refine_s": time.perf_counter() - start}
    return dataclasses.replace(result, policy=chosen, score=score, costs=costs.cost(chosen),
                               candidates=candidates, phases=phases, details=details)
