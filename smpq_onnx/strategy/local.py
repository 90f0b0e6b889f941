"""Budget-local SMPQ: Shapley contributions measured around networks that fit the budget.

The paper's game leaves absent units at FP32, so most coalitions it evaluates cost 3-30x the
budget and the contributions describe networks unlike the one that must fit. Here the game is
played in a window around a centre policy that fits (first the best measured uniform one):

- per unit and side, the widths one step below, at and one step above the centre's; absent
  players mean the step below (the window's floor), present ones the most bits present, so
  every coalition costs between "all one step down" and "all one step up";
- Owen sampling of that game gives each step's average marginal gain near the budget;
- the knapsack picks the best window policy under every budget at once; its best few are
  measured, and the best measured policy so far becomes the next centre (a trust region
  that moves with the incumbent) while evaluations are left.

Every evaluated coalition is a real policy with a real score: the best few that fit the
budget join the final candidates, scored on the emitted model like the knapsack's and the
uniform guard's. The best mixed candidate replaces the best uniform policy only when a paired
bootstrap on the search samples says its gain is real (:data:`CONFIDENCE`): picking the
highest of several noisy scores otherwise overfits the search set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.selection import Infeasible, best_k
from smpq_onnx.strategy.smpq import (
    Progress,
    SearchResult,
    SearchSettings,
    cheapest_policy,
    estimate_contributions,
    expected_sample_cost,
    infeasible_error,
    knapsack_problem,
    policy_of,
    sized_settings,
    uniform_candidates,
)

MAX_MOVES = 4
"""Most trust-region steps (windows) of one search."""
CONFIDENCE = 0.9
"""A mixed policy replaces the best uniform one only if it wins this share of paired
bootstrap resamples of the search set (its gain is not the search set's noise)."""
MEASURED_CANDIDATES = 2
"""Best measured coalitions that fit the budget, added to the final candidates."""


def window_around(game: QuantizationGame, center: Sequence[Option]
                  ) -> tuple[list[Option], list[list[Option]]]:
    """Per unit, the floor (one step below ``center`` per side) and the window's options."""
    floors, windows = [], []
    for unit, middle in zip(game.units, center, strict=True):
        if unit.pinned:
            floors.append(middle)
            windows.append([middle])
            continue
        if game.split_sides:
            w = _steps(sorted({o.w_bits for o in unit.options}), middle.w_bits)
            a = _steps(sorted({o.a_bits for o in unit.options}), middle.a_bits)
            legal = [o for o in unit.options if o.w_bits in w and o.a_bits in a]
            floors.append(Option(w[0], a[0]))
        else:
            ranked = sorted(unit.options, key=lambda o: (o.w_bits * o.a_bits, o.a_bits,
                                                         o.w_bits))
            legal = _steps(ranked, middle)
            floors.append(legal[0])
        windows.append(legal)
    return floors, windows


Step = TypeVar("Step")


def _steps(ordered: list[Step], middle: Step) -> list[Step]:
    i = ordered.index(middle)
    return ordered[max(i - 1, 0):i + 2]


def starting_center(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                    budget: Budget, uniforms: list[Policy]) -> list[Option]:
    """The best measured of ``uniforms`` (the uniform policies that fit); else the most bits
    (sum of log2 w·a over units, weighted by nothing) the knapsack fits."""
    if uniforms:
        scores = evaluator.scores(uniforms)
        best = uniforms[int(np.argmax(scores))]
    else:
        utilities = [np.log2([o.w_bits * o.a_bits for o in unit.options]) for unit in game.units]
        try:
            choice = best_k(knapsack_problem(game, costs, budget, utilities), 1)[0]
        except Infeasible as e:
            raise infeasible_error(game, costs, budget) from e
        best = policy_of(game, choice)
    return [best[unit.layers[0]] for unit in game.units]


def local_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                 budget: Budget, settings: SearchSettings, *, max_evals: int,
                 samples: int | None = None, windows: int | None = None,
                 progress: Progress | None = None) -> SearchResult:
    """``samples`` Owen samples in each of ``windows`` windows (default: sized to
    ``max_evals``, at most :data:`MAX_MOVES` windows of at least 2 samples)."""
    start = time.perf_counter()
    before = evaluator.n_evaluations
    known_before = set(evaluator.history)
    if not all(line.fits for line in budget.check(costs.cost(cheapest_policy(game)))):
        raise infeasible_error(game, costs, budget)
    uniforms = uniform_candidates(game, costs, budget)
    center = starting_center(game, evaluator, costs, budget, uniforms)
    first = game.window(*window_around(game, center))
    per_window = 2 * expected_sample_cost(first, settings.estimator)  # 2 Owen samples
    moves = windows or int(max(1, min(MAX_MOVES, max_evals // max(per_window, 1.0))))
    spent_per_move: list[int] = []
    played: tuple[QuantizationGame, np.ndarray, np.ndarray, np.ndarray] | None = None
    incumbent = policy_of(game, [u.options.index(o) for u, o in zip(game.units, center,
                                                                   strict=True)])
    for move in range(moves):
        local = first if move == 0 else game.window(*window_around(game, center))
        left = max_evals - (evaluator.n_evaluations - before)
        share = left // (moves - move)
        if (share <= 0 and samples is None) or not local.players:
            break
        cost = expected_sample_cost(local, settings.estimator)
        sized = sized_settings(local, dataclasses.replace(settings, rounds=1,
                                                          seed=settings.seed * 101 + move),
                               max_evals=share, rounds=1,
                               samples=samples or (None if share >= 2 * cost else 1))
        at = evaluator.n_evaluations

        def step(phase: str, done: int, total: int, m: int = move) -> None:
            if progress is not None:
                progress(f"shapley window {m + 1}/{moves}", done, total)

        phi, stderr, alpha = estimate_contributions(local, evaluator, sized, step)
        played = (local, phi, stderr, alpha)
        utilities = [np.array([table[o] for o in unit.options])
                     for unit, table in zip(local.units, local.unit_utilities(phi),
                                            strict=True)]
        choices = best_k(knapsack_problem(local, costs, budget, utilities),
                         settings.candidates)
        proposals = [policy_of(local, choice) for choice in choices]
        measured = dict(zip(proposals, evaluator.scores(proposals), strict=True))
        measured[incumbent] = evaluator.evaluate(incumbent).score
        incumbent = max(measured, key=lambda p: (measured[p], -costs.cost(p).bops))
        center = [incumbent[unit.layers[0]] for unit in game.units]
        spent_per_move.append(evaluator.n_evaluations - at)
    shapley_s = time.perf_counter() - start
    start = time.perf_counter()
    measured_here = {policy: result.score for policy, result in evaluator.history.items()
                     if policy not in known_before}
    candidates = final_candidates(game, costs, budget, incumbent, measured_here, uniforms)
    scored = [(policy, evaluator.evaluate_deployed(policy).score) for policy in candidates]
    best_policy, best_score = max(scored, key=lambda item: (item[1], -costs.cost(item[0]).bops))
    details: dict[str, float | int | str] = {
        "game": "local", "windows": len(spent_per_move),
        "evaluations_per_window": ",".join(map(str, spent_per_move))}
    uniform = [item for item in scored if item[0] in set(uniforms)]
    if uniform and best_policy not in {p for p, _ in uniform}:
        guard, guard_score = max(uniform, key=lambda item: item[1])
        rate = evaluator.paired_win_rate(evaluator.outputs(best_policy),
                                         evaluator.outputs(guard), seed=settings.seed)
        if rate is not None:
            details["paired_win_rate_vs_uniform"] = rate
            if rate < CONFIDENCE:  # a gain inside the search set's noise: keep the uniform
                best_policy, best_score = guard, guard_score
                details["kept_uniform"] = "yes"
    phases = {"shapley_s": shapley_s, "selection_s": time.perf_counter() - start}
    if played is None:  # no window had players left to measure
        return SearchResult(best_policy, best_score, costs.cost(best_policy),
                            evaluator.fp32_score, game, None, None, None, scored, phases,
                            details)
    local_game, phi, stderr, alpha = played
    return SearchResult(best_policy, best_score, costs.cost(best_policy), evaluator.fp32_score,
                        game, phi, stderr, alpha, scored, phases, details,
                        player_game=local_game)


def final_candidates(game: QuantizationGame, costs: CostModel, budget: Budget,
                     incumbent: Policy, measured: dict[Policy, float],
                     uniforms: list[Policy]) -> list[Policy]:
    """The incumbent, the best ``measured`` policies that fit and the ``uniforms`` guard."""
    fitting = sorted((score, n, policy) for n, (policy, score) in enumerate(measured.items())
                     if _complete(game, policy)
                     and all(line.fits for line in budget.check(costs.cost(policy))))
    chosen = [incumbent]
    for _, _, policy in reversed(fitting):
        if len(chosen) > MEASURED_CANDIDATES:
            break
        if policy not in chosen:
            chosen.append(policy)
    return chosen + [p for p in uniforms if p not in chosen]


def _complete(game: QuantizationGame, policy: Policy) -> bool:
    """Whether ``policy`` is one of this game's (pins kept, every unit at a legal option)."""
    return all(policy.get(unit.layers[0]) in unit.options for unit in game.units)
