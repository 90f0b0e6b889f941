"""SMPQ: Shapley contributions of (unit, bit-width) players, then selection under budgets.

1. K rounds of M sampled permutations (or Owen samples) of the game in
   :mod:`smpq_onnx.strategy.game`; between rounds the paper's momentum update moves alpha (Eq. 8-9):
   q_k = beta q_{k-1} + (1 - beta) psi / |psi|,  alpha_k = alpha_{k-1} + xi q_k / |q_k|.
2. Utilities u[unit, option] = sum of the option's players' Shapley values (pooled over rounds).
3. ``knapsack`` selection (default): the multiple-choice knapsack ILP of
   :mod:`smpq_onnx.strategy.selection` over every budget; its best few solutions, plus the most
   precise uniform policy that fits (a guard), are evaluated for real, as their emitted QDQ models
   (``Evaluator.evaluate_deployed``), and the best is kept: the reported metric is the one the
   written model has.
   ``paper`` selection: per unit, the option of largest alpha (the paper's final step, which
   ignores budgets; reported with its costs).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.errors import BudgetInfeasibleError
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel, Costs
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.control_variate import SeparableControlVariate, owen_with_control_variate
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.selection import Infeasible, KnapsackProblem, MemoryModel, best_k
from smpq_onnx.strategy.shapley import ESTIMATORS, FULL_BAND, QBand, ShapleyEstimate, estimate

Progress = Callable[[str, int, int], None]


CONTROL_VARIATE = "owen-cv"
SEARCH_ESTIMATORS = (*ESTIMATORS, CONTROL_VARIATE)
"""``owen-cv``: Owen sampling of V - g for the separable control variate g
(:mod:`smpq_onnx.strategy.control_variate`), whose Shapley values are exact."""

DEFAULT_MAX_EVALS = 1500
PAPER_SAMPLES = 10  # Table 1: M = 10
PAPER_ROUNDS = 2


@dataclass(frozen=True)
class SearchSettings:
    estimator: str = "owen"
    """Chosen by ``benchmarks/estimators.py``: at ~800 distinct evaluations Owen and antithetic
    permutations tie on RMSE (0.0035) and Owen's knapsack policy scored higher (91.8 % vs
    89.6 % top-1, 3 seeds)."""
    samples: int = PAPER_SAMPLES
    """M: permutations (or antithetic pairs, or Owen levels) per round (Table 1: 10)."""
    rounds: int = PAPER_ROUNDS
    """K: rounds of sampling between alpha updates."""
    xi: float = 0.1
    beta: float = 0.8
    truncation: float | None = 0.5
    """Stop a permutation once V(S) < truncation * V(empty) (percent metrics only)."""
    semantics: str = "hard"
    """How a coalition realizes several present options of a unit
    (:mod:`smpq_onnx.strategy.game`)."""
    reference: str = "FP32"
    """Precision of units with no present option."""
    selection: str = "knapsack"
    candidates: int = 3
    seed: int = 0
    q_band: QBand = FULL_BAND
    """Owen's q range (the full one: Shapley values; the local search narrows it to where
    coalitions cost about the budget)."""
    paired_levels: bool = True
    """Owen levels in antithetic pairs (single levels halve a sample's cost)."""
    anchor: str = "floor"
    """Where ``owen-cv``'s single-side table is measured (:mod:`.control_variate`)."""
    interactions: int = 0
    """Budget-local game: units whose pairwise terms are measured at each window's best
    proposal (:mod:`smpq_onnx.strategy.interactions`); 0 or 1: none."""
    surrogate: int = 0
    """Budget-local game: policies proposed by an additive surrogate fitted on every policy
    the search measured (:mod:`smpq_onnx.strategy.surrogate`), measured after the windows
    within ``max_evals``; 0: none."""
    game: str = "local"
    """``local``: the budget-local game of :mod:`smpq_onnx.strategy.local`; ``global``: the
    paper's game over every option, absent units at the reference precision."""


GAMES = ("local", "global")


@dataclass
class SearchResult:
    policy: Policy
    score: float
    costs: Costs
    fp32_score: float
    game: QuantizationGame
    phi: np.ndarray | None
    """Shapley values per player (SMPQ only)."""
    stderr: np.ndarray | None
    alpha: np.ndarray | None
    candidates: list[tuple[Policy, float]]
    phases: dict[str, float] = field(default_factory=dict)
    details: dict[str, float | int | str] = field(default_factory=dict)
    """Method-specific facts worth reporting (dmpq: selection rule used, attempts, cd)."""
    player_game: QuantizationGame | None = None
    """The game whose players ``phi`` is aligned with, when not ``game`` (the budget-local
    search's last window)."""

    @property
    def played(self) -> QuantizationGame:
        """The game of ``phi``'s players."""
        return self.player_game if self.player_game is not None else self.game


def expected_sample_cost(game: QuantizationGame, estimator: str, *,
                         paired: bool = True) -> float:
    """Expected real evaluations of one sample, before cache hits.

    Along a permutation a unit's realized bits on one side change each time a player of more
    bits arrives (alpha ties go to more bits): H(n) times on average for n players.
    """
    sides: dict[tuple[int, str], int] = {}
    for player in game.players:
        sides[(player.unit, player.side)] = sides.get((player.unit, player.side), 0) + 1
    walk = sum(sum(1.0 / k for k in range(1, n + 1)) for n in sides.values())
    # An antithetic Owen level toggles every player, but most toggles leave the realized
    # policy unchanged: measured, it needs about as many distinct evaluations as an antithetic
    # permutation pair (83 vs 81 on the bundled example).
    return walk if estimator == "permutation" or not paired else 2 * walk


def sized_settings(game: QuantizationGame, settings: SearchSettings, *,
                   max_evals: int = DEFAULT_MAX_EVALS, samples: int | None = None,
                   rounds: int | None = None) -> SearchSettings:
    """Fill in M and K (when not given) so the search stays within about ``max_evals``.

    At most the paper's M = 10 and K = 2; at least 2 samples in 1 round.
    """
    cost = expected_sample_cost(game, settings.estimator, paired=settings.paired_levels)
    if settings.estimator == CONTROL_VARIATE:  # its table: one evaluation per player, once
        max_evals = max(max_evals - len(game.players), 0)
    if rounds is None:
        rounds = PAPER_ROUNDS if max_evals >= PAPER_ROUNDS * 2 * cost else 1
    if samples is None:
        samples = int(min(PAPER_SAMPLES, max(2, max_evals // (rounds * cost))))
    return dataclasses.replace(settings, samples=samples, rounds=rounds)


def estimate_contributions(game: QuantizationGame, evaluator: Evaluator,
                           settings: SearchSettings, progress: Progress | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phi, stderr, alpha) after K rounds of the paper's momentum update."""
    rng = np.random.default_rng(settings.seed)
    n = len(game.players)
    alpha, momentum = np.zeros(n), np.zeros(n)
    truncate = None
    if settings.truncation is not None and evaluator.metric.percent:
        truncate = settings.truncation * evaluator.fp32_score
    rounds: list[ShapleyEstimate] = []
    variate: SeparableControlVariate | None = None
    per_evaluation = settings.estimator in ("owen", CONTROL_VARIATE)  # a round is one batch
    for round_index in range(settings.rounds):
        frozen_alpha = alpha.copy()

        def value(present: Sequence[int], a: np.ndarray = frozen_alpha) -> float:
            return evaluator.evaluate(game.realize(present, a)).score

        def values(coalitions: list[list[int]], a: np.ndarray = frozen_alpha,
                   r: int = round_index) -> list[float]:
            """One batch of coalitions; an Owen round's progress is counted per evaluation."""
            def evaluated(done: int) -> None:
                if progress is not None and per_evaluation:
                    progress("shapley", r * len(coalitions) + done,
                             settings.rounds * len(coalitions))
            policies = [game.realize(present, a) for present in coalitions]
            return [res.score for res in evaluator.evaluate_many(policies, evaluated)]

        def sampled(done: int, total: int, r: int = round_index) -> None:
            if progress is not None and not per_evaluation:
                progress("shapley", r * total + done, settings.rounds * total)

        if settings.estimator == CONTROL_VARIATE:
            if variate is None:
                variate = SeparableControlVariate(
                    game, lambda p: evaluator.evaluate(p).score,
                    policy_values=evaluator.scores, anchor=settings.anchor)
            result = owen_with_control_variate(variate, value, samples=settings.samples,
                                               rng=rng, alpha=frozen_alpha, values=values,
                                               band=settings.q_band,
                                               paired=settings.paired_levels)
        else:
            result = estimate(settings.estimator, n, value, samples=settings.samples, rng=rng,
                              truncate_below=truncate, values=values, progress=sampled,
                              band=settings.q_band, paired=settings.paired_levels)
        rounds.append(result)
        psi = result.phi
        norm = np.linalg.norm(psi)
        momentum = settings.beta * momentum + (1 - settings.beta) * (psi / norm if norm else psi)
        norm_q = np.linalg.norm(momentum)
        alpha = alpha + settings.xi * (momentum / norm_q if norm_q else momentum)
    phi = np.mean([r.phi for r in rounds], axis=0)
    stderr = np.sqrt(np.sum([r.stderr**2 for r in rounds], axis=0)) / len(rounds)
    return phi, stderr, alpha


def unit_cost_tables(game: QuantizationGame, costs: CostModel) -> dict[str, list[np.ndarray]]:
    """Per additive resource, per unit, the cost of each of the unit's options."""
    tables: dict[str, list[np.ndarray]] = {"bops": [], "weight_bytes": [], "latency_s": []}
    for unit in game.units:
        bops, weights, latency = [], [], []
        for option in unit.options:
            bops.append(sum(costs.layer_bops(name, option) for name in unit.layers))
            seen: set[str] = set()
            total = 0
            for name in unit.layers:
                layer = costs.layers[name]
                total += costs.layer_weight_bytes(name, option)
                if layer.weight in seen:  # shared weight stored once
                    total -= costs.layer_weight_bytes(name, option) - layer.bias_params * 4
                seen.add(layer.weight)
            weights.append(total)
            times = [costs.layer_latency_s(name, option) for name in unit.layers]
            latency.append(math.nan if any(t is None for t in times)
                           else sum(t for t in times if t is not None))
        tables["bops"].append(np.array(bops, dtype=float))
        tables["weight_bytes"].append(np.array(weights, dtype=float))
        tables["latency_s"].append(np.array(latency, dtype=float))
    return tables


def memory_model(game: QuantizationGame, costs: CostModel, limit: float) -> MemoryModel:
    unit_of = {name: k for k, unit in enumerate(game.units) for name in unit.layers}
    float_bits = costs.profile.float_activation_bits
    per_buffer, float_bytes = [], []
    for buffer in costs.liveness.buffers:
        readers: dict[int, np.ndarray] = {}
        for name in buffer.readers:
            k = unit_of[name]
            readers[k] = np.array([math.ceil(buffer.numel * o.a_bits / 8)
                                   for o in game.units[k].options], dtype=float)
        per_buffer.append(readers)
        in_float = buffer.read_in_float or not buffer.readers
        float_bytes.append(math.ceil(buffer.numel * float_bits / 8) if in_float else 0.0)
    live = np.unique(costs.liveness.live.T, axis=0)
    return MemoryModel(per_buffer, np.array(float_bytes, dtype=float), live, limit)


def knapsack_problem(game: QuantizationGame, costs: CostModel, budget: Budget,
                     utilities: list[np.ndarray]) -> KnapsackProblem:
    tables = unit_cost_tables(game, costs)
    problem_costs, budgets = {}, {}
    if budget.bops is not None:
        problem_costs["bops"], budgets["bops"] = tables["bops"], float(budget.bops)
    if budget.weight_bytes is not None:
        problem_costs["weight_bytes"] = tables["weight_bytes"]
        budgets["weight_bytes"] = float(budget.weight_bytes - costs.other_constant_bytes)
    if budget.latency_s is not None and not any(np.isnan(t).any() for t in tables["latency_s"]):
        problem_costs["latency_s"], budgets["latency_s"] = tables["latency_s"], budget.latency_s
    memory = None
    if budget.peak_activation_bytes is not None:
        memory = memory_model(game, costs, float(budget.peak_activation_bytes))
    return KnapsackProblem(utilities, problem_costs, budgets, memory)


def policy_of(game: QuantizationGame, choice: list[int]) -> Policy:
    chosen: dict[str, Option] = {}
    for unit, index in zip(game.units, choice, strict=True):
        for name in unit.layers:
            chosen[name] = unit.options[index]
    return Policy(chosen)


def policy_with(game: QuantizationGame, options: Sequence[Option]) -> Policy:
    """Each unit of ``game`` at its option in ``options`` (one of the unit's own)."""
    return policy_of(game, [unit.options.index(option)
                            for unit, option in zip(game.units, options, strict=True)])


def unit_moved(game: QuantizationGame, options: Sequence[Option], k: int, option: Option
               ) -> Policy:
    """:func:`policy_with` of ``options`` with unit ``k`` alone at ``option``."""
    trial = list(options)
    trial[k] = option
    return policy_with(game, trial)


def choice_of(game: QuantizationGame, policy: Policy) -> list[int]:
    """``policy`` as option indices per unit (the inverse of :func:`policy_of`)."""
    return [unit.options.index(policy[unit.layers[0]]) for unit in game.units]


def cheapest_policy(game: QuantizationGame) -> Policy:
    """Every unit at its option of fewest bits (w_bits * a_bits, then w_bits)."""
    choice = []
    for unit in game.units:
        sizes = [(o.w_bits * o.a_bits, o.w_bits) for o in unit.options]
        choice.append(sizes.index(min(sizes)))
    return policy_of(game, choice)


def infeasible_error(game: QuantizationGame, costs: CostModel, budget: Budget
                     ) -> BudgetInfeasibleError:
    cheapest = costs.cost(cheapest_policy(game))
    over = [f"{line.resource} {line.used:g} > {line.limit:g}" for line in budget.check(cheapest)
            if not line.fits]
    detail = "; ".join(over) if over else "no combination meets all budgets at once"
    pinned = sum(unit.pinned for unit in game.units)
    fix = (f"relax a budget or pin fewer layers ({pinned} quantizer group(s) pinned)"
           if pinned else "relax a budget")
    return BudgetInfeasibleError(
        f"no policy meets the budget: even the cheapest (bops {cheapest.bops}, weight_bytes "
        f"{cheapest.weight_bytes}, peak_activation_bytes {cheapest.peak_activation_bytes}) "
        f"misses it ({detail}); {fix}")


def select(game: QuantizationGame, costs: CostModel, budget: Budget, phi: np.ndarray,
           evaluator: Evaluator, *, candidates: int,
           utilities: list[np.ndarray] | None = None
           ) -> tuple[Policy, float, list[tuple[Policy, float]]]:
    """Knapsack on utilities (from player values ``phi`` unless given per unit and option)."""
    if utilities is None:
        utilities = [np.array([table[o] for o in unit.options])
                     for unit, table in zip(game.units, game.unit_utilities(phi), strict=True)]
    problem = knapsack_problem(game, costs, budget, utilities)
    try:
        choices = best_k(problem, candidates)
    except Infeasible as e:
        raise infeasible_error(game, costs, budget) from e
    policies = [policy_of(game, choice) for choice in choices]
    # A guard: never worse than the best measured uniform policy that fits.
    policies += [p for p in uniform_candidates(game, costs, budget) if p not in policies]
    scored = [(policy, evaluator.evaluate_deployed(policy).score) for policy in policies]
    best_policy, best_score = max(scored, key=lambda item: (item[1], -costs.cost(item[0]).bops))
    return best_policy, best_score, scored


def uniform_candidates(game: QuantizationGame, costs: CostModel,
                       budget: Budget) -> list[Policy]:
    """Every uniform policy that meets the budget at the highest bit product (w·a) that does
    (pinned units keep their pin).

    Options of one product are not ordered by precision (at 0.25x W8A8 BOPs, W2A8 and W4A4
    both fit; on the bundled example W2A8 keeps 24.5 % held-out top-1 and W4A4 about 89 %), so
    they are all measured and the best kept (the uniform baseline and the selection's guard).
    """
    free = [unit for unit in game.units if not unit.pinned]
    if not free:
        return []
    shared = set(free[0].options)
    for unit in free[1:]:
        shared &= set(unit.options)
    fitting = []
    for option in shared:
        policy = policy_of(game, [0 if unit.pinned else unit.options.index(option)
                                  for unit in game.units])
        if budget.fits(costs.cost(policy)):
            fitting.append((option.w_bits * option.a_bits, option.a_bits, option.w_bits, policy))
    if not fitting:
        return []
    top = max(product for product, *_ in fitting)
    return [policy for product, *_, policy in sorted(fitting, key=lambda f: f[:3], reverse=True)
            if product == top]


def paper_selection(game: QuantizationGame, alpha: np.ndarray) -> Policy:
    """Per unit, the option whose players have the largest alpha (sum over sides)."""
    choice = []
    for unit, table in zip(game.units, game.unit_utilities(alpha), strict=True):
        ranked = [(table[o], o) for o in unit.options]
        choice.append(ranked.index(max(ranked)))
    return policy_of(game, choice)


def shapley_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel,
                   budget: Budget, settings: SearchSettings,
                   progress: Progress | None = None) -> SearchResult:
    phases: dict[str, float] = {}
    start = time.perf_counter()
    cheapest = costs.cost(cheapest_policy(game))
    if not budget.fits(cheapest) and settings.selection == "knapsack":
        raise infeasible_error(game, costs, budget)
    phi, stderr, alpha = estimate_contributions(game, evaluator, settings, progress)
    phases["shapley_s"] = time.perf_counter() - start
    start = time.perf_counter()
    if settings.selection == "paper":
        policy = paper_selection(game, alpha)
        scored = [(policy, evaluator.evaluate_deployed(policy).score)]
        score = scored[0][1]
    else:
        policy, score, scored = select(game, costs, budget, phi, evaluator,
                                       candidates=settings.candidates)
    phases["selection_s"] = time.perf_counter() - start
    return SearchResult(policy, score, costs.cost(policy), evaluator.fp32_score, game, phi,
                        stderr, alpha, scored, phases)
