"""Budget-local SMPQ: Shapley contributions measured around networks that fit the budget.

The paper's game leaves absent units at FP32, so most coalitions it evaluates cost 3-30x the
budget and the contributions describe networks unlike the one that must fit. Here the game is
played in a window around a centre policy that fits (first the best measured of the uniform
policies and of the knapsack's most-bits policies, :mod:`smpq_onnx.strategy.start`):

- per unit and side, the widths one step below, at and one step above the centre's; absent
  players mean the step below (the window's floor), present ones the most bits present, so
  every coalition costs between "all one step down" and "all one step up";
- each step's average marginal gain near the budget: by default (``owen-cv``, anchor
  ``ceiling``) every side lowered alone from the window's top (AMP's clean single-layer
  measurement) plus Owen levels of what that table leaves unexplained, q drawn in the band
  where coalitions cost about the budget (:func:`budget_band`);
- the knapsack picks the best window policy under every budget at once; its best few are
  measured (for the values with and without the sampled residual), and the best of them
  becomes the next centre (a trust region that moves with the incumbent) only if it wins
  :data:`CONFIDENCE` of paired bootstrap resamples against the incumbent, while evaluations
  are left;
- after the windows, the joint polish (:func:`joint_polish`): every unit moved alone to each
  joint option of its one-step window around the incumbent, the measured changes as knapsack
  utilities, the knapsack's best few measured; it runs when it costs at most a third of the
  evaluations (the windows' per-side players add a unit's weight and activation changes; the
  polish measures them together: a better search utility than AMP's at AMP's count on both
  Fashion nets, README "The joint polish");
- with ``SearchSettings.interactions`` K, pair terms measured at each window's best proposal
  join the knapsack (:mod:`smpq_onnx.strategy.interactions`) and its policies compete too.

Every evaluated coalition is a real policy with a real score: the best few that fit the
budget join the final candidates, scored on the emitted model like the knapsack's and the
uniform guard's. A candidate replaces the incumbent, and a mixed policy the best uniform one,
only when a paired bootstrap on the search samples says its gain is real
(:data:`CONFIDENCE`): picking the highest of several noisy scores otherwise overfits the
search set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.control_variate import SeparableControlVariate
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.interactions import interaction_proposals, pair_cost
from smpq_onnx.strategy.selection import Infeasible, best_k
from smpq_onnx.strategy.shapley import QBand
from smpq_onnx.strategy.smpq import (
    CONTROL_VARIATE,
    Progress,
    SearchResult,
    SearchSettings,
    cheapest_policy,
    estimate_contributions,
    expected_sample_cost,
    infeasible_error,
    knapsack_problem,
    policy_of,
    policy_with,
    uniform_candidates,
    unit_moved,
)
from smpq_onnx.strategy.start import sensitivity_cost, sensitivity_policies, starting_center
from smpq_onnx.strategy.surrogate import fit_additive, surrogate_proposals
from smpq_onnx.strategy.window import unit_window, window_around

MAX_MOVES = 4
"""Most trust-region steps (windows) of one search."""
CONFIDENCE = 0.9
"""A mixed policy replaces the best uniform one only if it wins this share of paired
bootstrap resamples of the search set (its gain is not the search set's noise)."""
MEASURED_CANDIDATES = 2
"""Best measured coalitions that fit the budget, added to the final candidates."""
BAND_HALF_WIDTH = 0.25
"""Owen's q is drawn within this distance of the q at which a window's coalitions cost the
budget (the budget-local band)."""
POLISH_PROPOSALS = 3
"""Knapsack policies measured after the polish's cells."""
LOCKED_OUT = 1e3
"""Utility that keeps the polish's knapsack off options outside the one-step window."""
POLISH_SHARE_LIMIT = 3
"""The polish runs when it costs at most 1/3 of the evaluations."""
SENSITIVITY_SHARE_LIMIT = 3
"""With ``sensitivity_start``, the side sensitivities are measured when they cost at most 1/3
of the evaluations."""
START_SHARE_LIMIT = 2
"""The sensitivity start's joint rounds stop before it has spent 1/2 of the evaluations."""
_BAND_GRID = 21
_BAND_DRAWS = 4


def budget_band(game: QuantizationGame, costs: CostModel, budget: Budget, *, seed: int,
                half_width: float = BAND_HALF_WIDTH) -> QBand:
    """The q-band around q*, the inclusion probability at which a coalition of ``game`` uses
    its tightest budget line in full on average (interpolated on a grid of q, a few random
    coalitions each; 0 or 1 where the budget lies outside the window)."""
    rng = np.random.default_rng(seed)
    n = len(game.players)
    grid = np.linspace(0.0, 1.0, _BAND_GRID)
    usage = []
    for q in grid:
        draws = []
        for _ in range(_BAND_DRAWS):
            policy = game.realize(np.flatnonzero(rng.random(n) < q).tolist())
            draws.append(max((line.used or 0.0) / line.limit
                             for line in budget.check(costs.cost(policy)) if line.limit))
        usage.append(float(np.mean(draws)))
    usage_at = np.maximum.accumulate(np.array(usage))  # costs grow with q
    if usage_at[0] >= 1.0:
        center = 0.0
    elif usage_at[-1] <= 1.0:
        center = 1.0
    else:
        above = int(np.argmax(usage_at > 1.0))
        low, high = usage_at[above - 1], usage_at[above]
        center = float(grid[above - 1] + (grid[above] - grid[above - 1])
                       * (1.0 - low) / max(high - low, 1e-12))
    return (max(0.0, center - half_width), min(1.0, center + half_width))


def window_settings(local: QuantizationGame, costs: CostModel, budget: Budget,
                    settings: SearchSettings, *, share: int, samples: int | None,
                    seed: int) -> SearchSettings:
    """One window's estimator settings within ``share`` evaluations: q in the budget band;
    antithetic pairs of Owen levels when at least two pairs fit, else single levels; with
    ``owen-cv`` the single-side table comes first and may leave no level (its values
    alone). ``samples`` (the user's) overrides the count."""
    level = expected_sample_cost(local, settings.estimator, paired=False)
    left = share - settings.candidates
    if settings.estimator == CONTROL_VARIATE:  # the table, and its own proposals
        left -= len(local.players) + 1 + settings.candidates
    if settings.interactions >= 2:  # the measured pairs, and their proposals
        left -= pair_cost(settings.interactions) + settings.candidates
    paired = samples is not None or left >= 4 * level
    count = samples if samples is not None else (
        max(2, int(left // (2 * level))) if paired else int(max(left, 0) // max(level, 1.0)))
    if settings.estimator != CONTROL_VARIATE:
        count = max(count, 1)
    return dataclasses.replace(settings, rounds=1, seed=seed, paired_levels=paired,
                               samples=count,
                               q_band=budget_band(local, costs, budget, seed=seed))


def knapsack_proposals(local: QuantizationGame, costs: CostModel, budget: Budget,
                       phi: np.ndarray, count: int) -> list[Policy]:
    """The ``count`` best policies of the window under every budget, for values ``phi``."""
    problem = knapsack_problem(local, costs, budget, option_utilities(local, phi))
    return [policy_of(local, choice) for choice in best_k(problem, count)]


def option_utilities(local: QuantizationGame, phi: np.ndarray) -> list[np.ndarray]:
    """Per unit, the utility of each of its options (in the unit's order) for ``phi``."""
    return [np.array([table[o] for o in unit.options])
            for unit, table in zip(local.units, local.unit_utilities(phi), strict=True)]


def joint_cells(game: QuantizationGame, incumbent: Policy,
                units: Sequence[int] | None = None) -> dict[tuple[int, Option], Policy]:
    """Per unit (of ``units``, default all), ``incumbent`` with that unit alone at each other
    joint option of its one-step window (weight and activation widths moved together)."""
    center = [incumbent[unit.layers[0]] for unit in game.units]
    _, windows = window_around(game, center)
    chosen = range(len(game.units)) if units is None else units
    return {(k, o): unit_moved(game, center, k, o)
            for k in chosen for o in windows[k] if o != center[k]}


def polished_units(game: QuantizationGame, costs: CostModel, incumbent: Policy,
                   evaluations: int) -> list[int]:
    """The units whose cells :func:`joint_polish` measures within ``evaluations`` (its
    incumbent and proposals included): all where they fit, else the costliest in BOPs at
    ``incumbent`` first (where a trade between units pays most)."""
    def bops(k: int) -> float:
        unit = game.units[k]
        return sum(costs.layer_bops(name, incumbent[name]) for name in unit.layers)

    left = evaluations - 1 - POLISH_PROPOSALS
    chosen = []
    for k in sorted(range(len(game.units)), key=lambda k: (-bops(k), k)):
        unit = game.units[k]
        cells = len(unit_window(game, unit, incumbent[unit.layers[0]])[1]) - 1
        if cells <= left:
            chosen.append(k)
            left -= cells
    return sorted(chosen)


def polish_cost(game: QuantizationGame) -> int:
    """The most evaluations :func:`joint_polish` can take, whatever the incumbent: per unit
    the cells of its widest one-step window, and the proposals."""
    cells = sum(max(len(unit_window(game, unit, o)[1]) for o in unit.options) - 1
                for unit in game.units)
    return cells + POLISH_PROPOSALS


def joint_polish(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                 budget: Budget, incumbent: Policy, *, seed: int,
                 units: Sequence[int] | None = None) -> Policy:
    """One measured step from ``incumbent``: every unit moved alone to each joint option of
    its one-step window (its own weight-activation interplay measured, which the windows'
    per-side players add up), the changes as knapsack utilities; the best of the knapsack's
    :data:`POLISH_PROPOSALS` policies replaces ``incumbent`` if it wins the paired test.
    ``units`` (default all) limits the units moved; the others keep their option."""
    cells = joint_cells(game, incumbent, units)
    base, *scores = evaluator.scores([incumbent, *cells.values()])
    gain = dict(zip(cells, (score - base for score in scores), strict=True))
    utilities = [np.array([gain.get((k, o), 0.0 if o == incumbent[unit.layers[0]]
                                    else -LOCKED_OUT) for o in unit.options])
                 for k, unit in enumerate(game.units)]
    try:
        choices = best_k(knapsack_problem(game, costs, budget, utilities), POLISH_PROPOSALS)
    except Infeasible:
        return incumbent
    proposals = [p for p in (policy_of(game, c) for c in choices) if p != incumbent]
    if not proposals:
        return incumbent
    measured = evaluator.scores(proposals)
    challenger = proposals[int(np.argmax(measured))]
    if max(measured) > base and beats(evaluator, challenger, incumbent, seed=seed):
        return challenger
    return incumbent


def local_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                 budget: Budget, settings: SearchSettings, *, max_evals: int,
                 samples: int | None = None, windows: int | None = None,
                 radius: int = 1, most_bits_start: bool = True,
                 sensitivity_start: bool = False, sensitivity_candidates: bool = False,
                 polish: bool = True,
                 progress: Progress | None = None) -> SearchResult:
    """``samples`` Owen samples in each of ``windows`` windows (default: sized to
    ``max_evals``, at most :data:`MAX_MOVES` windows of at least 2 samples), each spanning
    ``radius`` steps either side of its centre per side (wider windows were mixed on the
    depthwise Fashion net: README, "Budget-local game: measured"). ``sensitivity_start``
    adds the sensitivity knapsack's policies (:func:`~smpq_onnx.strategy.start.
    sensitivity_policies`, at most 1/:data:`START_SHARE_LIMIT` of ``max_evals``) to the
    first centre's candidates where its side table costs at most
    1/:data:`SENSITIVITY_SHARE_LIMIT` of them; ``sensitivity_candidates`` measures the same
    policies but lets them compete only as final candidates, the windows starting where they
    would without them. Both off by default (README, "Joint cells for the sensitivity
    start")."""
    start = time.perf_counter()
    before = evaluator.n_evaluations
    known_before = set(evaluator.history)
    if not budget.fits(costs.cost(cheapest_policy(game))):
        raise infeasible_error(game, costs, budget)
    uniforms = uniform_candidates(game, costs, budget)
    sensitivity = (max_evals // START_SHARE_LIMIT if (sensitivity_start or sensitivity_candidates)
                   and SENSITIVITY_SHARE_LIMIT * sensitivity_cost(game) <= max_evals else 0)
    center = starting_center(game, evaluator, costs, budget, uniforms,
                             most_bits=most_bits_start,
                             sensitivity=sensitivity if sensitivity_start else 0)
    if sensitivity and not sensitivity_start:  # measured: they compete as final candidates
        evaluator.scores(sensitivity_policies(game, evaluator, costs, budget,
                                              evaluations=sensitivity))
    started = evaluator.n_evaluations - before
    first = game.window(*window_around(game, center, radius))
    per_window = 2 * expected_sample_cost(first, settings.estimator)  # 2 Owen samples
    reserve = min(settings.surrogate, max(max_evals - (evaluator.n_evaluations - before), 0))
    max_evals -= reserve  # the surrogate's proposals are measured after the windows
    budgeted = max_evals
    incumbent = policy_with(game, center)
    reserved = polish_cost(game)
    polishing = polish and max_evals >= POLISH_SHARE_LIMIT * reserved
    if polishing:  # measured after the windows, around their incumbent
        max_evals -= reserved
    moves = windows or int(max(1, min(MAX_MOVES, max_evals // max(per_window, 1.0))))
    spent_per_move: list[int] = []
    bands: list[str] = []
    pair_terms: list[int] = []
    accepted = 0
    played: tuple[QuantizationGame, np.ndarray, np.ndarray, np.ndarray] | None = None
    for move in range(moves):
        local = first if move == 0 else game.window(*window_around(game, center, radius))
        left = max_evals - (evaluator.n_evaluations - before)
        share = left // (moves - move)
        if (share <= 0 and samples is None) or not local.players:
            break
        sized = window_settings(local, costs, budget, settings, share=share, samples=samples,
                                seed=settings.seed * 101 + move)
        low, high = sized.q_band
        bands.append(f"{low:.2f}-{high:.2f}x{sized.samples}"
                     f"{'' if sized.paired_levels else 's'}")
        at = evaluator.n_evaluations

        def step(phase: str, done: int, total: int, m: int = move) -> None:
            if progress is not None:
                progress(f"shapley window {m + 1}/{moves}", done, total)

        phi, stderr, alpha = estimate_contributions(local, evaluator, sized, step)
        played = (local, phi, stderr, alpha)
        proposals = knapsack_proposals(local, costs, budget, phi, settings.candidates)
        if sized.estimator == CONTROL_VARIATE and sized.samples > 0:
            # The table's part is exact, the residual's a few noisy levels: the table's own
            # proposals are measured too (its evaluations are all cached), so more evaluations
            # never lose what the table alone would have found.
            table = SeparableControlVariate(local, lambda p: evaluator.evaluate(p).score,
                                            policy_values=evaluator.scores,
                                            anchor=sized.anchor)
            proposals += [p for p in knapsack_proposals(
                local, costs, budget, table.shapley(None, sized.q_band), settings.candidates)
                if p not in proposals]
        measured = dict(zip(proposals, evaluator.scores(proposals), strict=True))

        def ranked(p: Policy, scores: dict[Policy, float] = measured) -> tuple[float, int]:
            return scores[p], -costs.cost(p).bops  # the best score, then the fewest BOPs

        challenger = max(measured, key=ranked)
        if sized.interactions >= 2:  # pair terms measured at the best proposal
            extra, terms = interaction_proposals(
                local, evaluator.scores, costs, budget, option_utilities(local, phi),
                challenger, units=sized.interactions, count=settings.candidates)
            extra = [p for p in extra if p not in measured]
            measured.update(zip(extra, evaluator.scores(extra), strict=True))
            challenger = max(measured, key=ranked)
            pair_terms.append(len(terms))
        if (measured[challenger] > evaluator.evaluate(incumbent).score
                and beats(evaluator, challenger, incumbent, seed=settings.seed)):
            incumbent = challenger
            accepted += 1
        center = [incumbent[unit.layers[0]] for unit in game.units]
        spent_per_move.append(evaluator.n_evaluations - at)
    polished = "off"
    if polishing:
        left = budgeted - (evaluator.n_evaluations - before)
        units = polished_units(game, costs, incumbent, left)
        at = evaluator.n_evaluations
        moved = joint_polish(game, evaluator, costs, budget, incumbent, seed=settings.seed,
                             units=units) if units else incumbent
        polished = (f"{'accepted' if moved != incumbent else 'kept'}, "
                    f"{len(units)} of {len(game.units)} units, "
                    f"{evaluator.n_evaluations - at} evaluations")
        incumbent = moved
    fitted = (propose_from_surrogate(game, evaluator, costs, budget, known_before,
                                     count=reserve) if reserve else {})
    shapley_s = time.perf_counter() - start
    start = time.perf_counter()
    measured_here = measured_since(evaluator, known_before)
    candidates = final_candidates(game, costs, budget, incumbent, measured_here, uniforms)
    scored = [(policy, evaluator.evaluate_deployed(policy).score) for policy in candidates]
    best_policy, best_score = max(scored, key=lambda item: (item[1], -costs.cost(item[0]).bops))
    details: dict[str, float | int | str] = {
        "game": "local", "start_evaluations": started, "windows": len(spent_per_move),
        "evaluations_per_window": ",".join(map(str, spent_per_move)),
        "q_bands": ",".join(bands), "moves_accepted": accepted,
        "polish": polished, **fitted}
    if pair_terms:
        details["pair_terms_per_window"] = ",".join(map(str, pair_terms))
    if best_policy != incumbent and not beats(evaluator, best_policy, incumbent,
                                              seed=settings.seed):
        best_policy, best_score = next(item for item in scored if item[0] == incumbent)
        details["kept_incumbent"] = "yes"
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


def propose_from_surrogate(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                           budget: Budget, known_before: set[Policy], *, count: int
                           ) -> dict[str, float | int | str]:
    """Fit the additive surrogate on every policy this search measured, measure its
    ``count`` best policies under the budget (they compete as measured policies in
    :func:`final_candidates`) and say what the fit was."""
    surrogate = fit_additive(game, measured_since(evaluator, known_before))
    if surrogate is None:
        return {"surrogate": "too few policies"}
    proposals = surrogate_proposals(game, costs, budget, surrogate, count)
    scores = evaluator.scores(proposals)
    return {"surrogate": f"{surrogate.policies} policies, loo rmse {surrogate.loo_rmse:.4g} "
                         f"of spread {surrogate.spread:.4g}",
            "surrogate_best": round(max(scores), 6) if scores else "none"}


def measured_since(evaluator: Evaluator, known_before: set[Policy]) -> dict[Policy, float]:
    """The scores of the policies ``evaluator`` measured that were not in ``known_before``."""
    return {policy: result.score for policy, result in evaluator.history.items()
            if policy not in known_before}


def beats(evaluator: Evaluator, challenger: Policy, incumbent: Policy, *, seed: int) -> bool:
    """Whether ``challenger`` wins :data:`CONFIDENCE` of paired bootstrap resamples of the
    search samples against ``incumbent`` (True where the metric's rows are not samples:
    the caller's score comparison decides alone)."""
    rate = evaluator.paired_win_rate(evaluator.outputs(challenger), evaluator.outputs(incumbent),
                                     seed=seed)
    return rate is None or rate >= CONFIDENCE


def final_candidates(game: QuantizationGame, costs: CostModel, budget: Budget,
                     incumbent: Policy, measured: dict[Policy, float],
                     uniforms: list[Policy]) -> list[Policy]:
    """The incumbent, the best ``measured`` policies that fit and the ``uniforms`` guard.

    Ties go to fewer BOPs, then to the policy's options by layer name, never to the order
    in which the scores arrived (which depends on the executor and the batch order)."""
    complete = {policy: costs.cost(policy) for policy in measured if _complete(game, policy)}
    fitting = sorted(((measured[policy], -cost.bops, policy.sort_key()), policy)
                     for policy, cost in complete.items() if budget.fits(cost))
    chosen = [incumbent]
    for _, policy in reversed(fitting):
        if len(chosen) > MEASURED_CANDIDATES:
            break
        if policy not in chosen:
            chosen.append(policy)
    return chosen + [p for p in uniforms if p not in chosen]


def _complete(game: QuantizationGame, policy: Policy) -> bool:
    """Whether ``policy`` is one of this game's (pins kept, every unit at a legal option)."""
    return all(policy.get(unit.layers[0]) in unit.options for unit in game.units)
