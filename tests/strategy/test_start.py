"""The first centre's candidates: on a score that adds up over unit sides, the knapsack on
side sensitivities finds the exact best policy under the budget, with one evaluation per
side width (and one for the top); pinned units are not measured. Where a unit's two widths
interact, the side sums miss the best policy and the joint rounds find it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import conv_chain

from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.smpq import policy_of
from smpq_onnx.strategy.space import SearchSpace
from smpq_onnx.strategy.start import (
    JOINT_ROUNDS,
    sensitivity_cost,
    sensitivity_policies,
    starting_center,
)

WEIGHT_LOSS = (3.0, 0.4, 1.1)
ACTIVATION_LOSS = (0.5, 2.0, 0.7)


@dataclass
class Scored:
    score: float


class SideAdditiveEvaluator:
    """Score = minus, per unit and side, a weight times 2^-bits: units and sides add up.
    Memoized like the real evaluator: ``asked`` counts distinct policies."""

    def __init__(self, game: QuantizationGame) -> None:
        self.game, self.seen = game, set[Policy]()

    @property
    def asked(self) -> int:
        return len(self.seen)

    def value(self, policy: Policy) -> float:
        options = [policy[u.layers[0]] for u in self.game.units]
        return -sum(wl * 2.0 ** -o.w_bits + al * 2.0 ** -o.a_bits
                    for wl, al, o in zip(WEIGHT_LOSS, ACTIVATION_LOSS, options, strict=True))

    def scores(self, policies: list[Policy]) -> list[float]:
        self.seen.update(policies)
        return [self.value(p) for p in policies]

    def evaluate(self, policy: Policy) -> Scored:
        self.seen.add(policy)
        return Scored(self.value(policy))


@pytest.fixture(scope="module")
def chain() -> tuple[QuantizationGame, CostModel]:
    model, profile = import_model(conv_chain()), load_profile("flexible")
    return QuantizationGame(SearchSpace.build(model, profile)), CostModel(model, profile)


def w8a8_fraction(game: QuantizationGame, costs: CostModel, ratio: float) -> Budget:
    """A BOPs budget of ``ratio`` times uniform W8A8's."""
    top = costs.cost(policy_of(game, [u.options.index(Option(8, 8)) for u in game.units]))
    return Budget(bops=int(ratio * top.bops))


def brute_force_best(game: QuantizationGame, costs: CostModel, budget: Budget,
                     evaluator: SideAdditiveEvaluator) -> float:
    """The best value of every policy under the budget (BOPs add up over units)."""
    bops = [[sum(costs.layer_bops(name, o) for name in u.layers) for o in u.options]
            for u in game.units]
    assert budget.bops is not None
    best = -np.inf
    for choice in itertools.product(*(range(len(u.options)) for u in game.units)):
        if sum(b[i] for b, i in zip(bops, choice, strict=True)) <= budget.bops:
            best = max(best, evaluator.value(policy_of(game, list(choice))))
    return best


@pytest.mark.parametrize("ratio", [0.12, 0.25, 0.5])
def test_the_sensitivity_knapsack_finds_the_best_policy_of_a_side_additive_score(
        chain: tuple[QuantizationGame, CostModel], ratio: float) -> None:
    game, costs = chain
    budget = w8a8_fraction(game, costs, ratio)
    evaluator = SideAdditiveEvaluator(game)
    best, second, *walk = sensitivity_policies(game, evaluator, costs,  # type: ignore[arg-type]
                                               budget, evaluations=sensitivity_cost(game))
    assert len(walk) <= 1  # AMP's greedy walk, where it ends elsewhere
    assert sensitivity_cost(game) == 3 * (6 + 6) + 1
    assert sensitivity_cost(game) <= evaluator.asked <= sensitivity_cost(game) + 1  # the walk's
    assert all(budget.fits(costs.cost(p)) for p in [best, second, *walk])
    assert evaluator.value(best) == pytest.approx(brute_force_best(game, costs, budget,
                                                                   evaluator))
    assert evaluator.value(second) <= evaluator.value(best) and second != best


def test_each_trial_lowers_one_side_of_one_unit_from_the_top_and_pins_stay(
        chain: tuple[QuantizationGame, CostModel]) -> None:
    game, costs = chain
    budget = Budget(bops=costs.cost(policy_of(game, [0] * len(game.units))).bops * 4)
    evaluator = SideAdditiveEvaluator(game)
    returned = sensitivity_policies(game, evaluator, costs, budget,  # type: ignore[arg-type]
                                    evaluations=sensitivity_cost(game))
    trials = [p for p in evaluator.seen if p not in returned
              and any(p[u.layers[0]] != Option(8, 8) for u in game.units)]
    assert len(trials) == 3 * (6 + 6)
    for policy in trials:
        moved = [policy[u.layers[0]] for u in game.units if policy[u.layers[0]] != Option(8, 8)]
        assert len(moved) == 1 and 8 in (moved[0].w_bits, moved[0].a_bits)
    model, profile = import_model(conv_chain()), load_profile("flexible")
    first = game.units[0].layers[0]
    pinned = QuantizationGame(SearchSpace.build(model, profile), pins={first: Option(4, 8)})
    recorder = SideAdditiveEvaluator(pinned)
    walked = sensitivity_policies(pinned, recorder, costs, budget,  # type: ignore[arg-type]
                                  evaluations=sensitivity_cost(game))[2:]
    assert sensitivity_cost(pinned) == 1 + 2 * (6 + 6) and len(walked) <= 1
    assert sensitivity_cost(pinned) <= recorder.asked <= sensitivity_cost(pinned) + 1
    assert all(p[first] == Option(4, 8) for p in recorder.seen)


def test_the_start_takes_the_best_measured_candidate(
        chain: tuple[QuantizationGame, CostModel]) -> None:
    game, costs = chain
    budget = w8a8_fraction(game, costs, 0.25)
    evaluator = SideAdditiveEvaluator(game)
    plain = starting_center(game, evaluator, costs, budget, [])  # type: ignore[arg-type]
    measured = starting_center(game, evaluator, costs, budget, [],  # type: ignore[arg-type]
                               sensitivity=sensitivity_cost(game))

    def value(options: list[Option]) -> float:
        return evaluator.value(policy_of(game, [u.options.index(o) for u, o in
                                                zip(game.units, options, strict=True)]))

    assert value(measured) >= value(plain)
    assert value(measured) == pytest.approx(brute_force_best(game, costs, budget, evaluator))


INTERACTION = (40.0, 0.0, 25.0)


class InteractingEvaluator(SideAdditiveEvaluator):
    """The side-additive score less, per unit, a term that grows when both of its widths are
    low together: the side sums from the top are optimistic about every lowered option."""

    def value(self, policy: Policy) -> float:
        options = [policy[u.layers[0]] for u in self.game.units]
        return super().value(policy) - sum(c * 2.0 ** -(o.w_bits + o.a_bits)
                                           for c, o in zip(INTERACTION, options, strict=True))


@pytest.mark.parametrize("ratio", [0.12, 0.25])
def test_joint_rounds_find_the_best_policy_where_the_side_sums_miss_it(
        chain: tuple[QuantizationGame, CostModel], ratio: float) -> None:
    game, costs = chain
    budget = w8a8_fraction(game, costs, ratio)
    side_only = InteractingEvaluator(game)
    sides = sensitivity_policies(game, side_only, costs, budget,  # type: ignore[arg-type]
                                 evaluations=sensitivity_cost(game))
    optimum = brute_force_best(game, costs, budget, side_only)
    assert max(side_only.value(p) for p in sides) < optimum - 1e-3  # the sides miss it
    evaluator = InteractingEvaluator(game)
    cap = sensitivity_cost(game) + JOINT_ROUNDS * 3 * 2 * 8
    policies = sensitivity_policies(game, evaluator, costs, budget,  # type: ignore[arg-type]
                                    evaluations=cap)
    assert sensitivity_cost(game) < evaluator.asked <= cap
    assert all(budget.fits(costs.cost(p)) for p in policies)
    assert max(evaluator.value(p) for p in policies) == pytest.approx(optimum)
    cells = [p for p in evaluator.seen if p not in policies]  # the walk's evaluation aside
    assert all(sum(p[u.layers[0]] != Option(8, 8) for u in game.units) <= 1
               for p in cells)  # every cell moves one unit alone from the top
    assert len(cells) >= evaluator.asked - 1


def test_sensitivity_candidates_are_measured_and_the_search_returns_one_at_least_as_good(
        chain: tuple[QuantizationGame, CostModel]) -> None:
    from smpq_onnx.engine.dataset import Dataset
    from smpq_onnx.engine.evaluator import Evaluator
    from smpq_onnx.engine.metrics import BUILTIN_METRICS
    from smpq_onnx.model.runtime import RuntimeConfig
    from smpq_onnx.quant.calibration import Calibration, CalibrationSettings, collect_histograms
    from smpq_onnx.strategy.local import local_search
    from smpq_onnx.strategy.smpq import SearchSettings

    game, costs = chain
    model = import_model(conv_chain())
    x = np.random.default_rng(3).normal(size=(40, 3, 8, 8)).astype(np.float32)
    runtime = RuntimeConfig(provider="cpu")
    hist = collect_histograms(model, [{"x": x[:16]}], [la.activation for la in model.layers],
                              runtime=runtime)
    evaluator = Evaluator(model, Calibration(model, hist, CalibrationSettings()),
                          Dataset({"x": x[16:]}, None, "search"), BUILTIN_METRICS["sqnr"],
                          runtime=runtime, batch_size=8)
    budget = w8a8_fraction(game, costs, 0.25)
    result = local_search(game, evaluator, costs, budget,
                          SearchSettings(seed=0, estimator="owen-cv", game="local"),
                          max_evals=200, sensitivity_candidates=True)
    assert budget.fits(result.costs)
    measured, asked = set(evaluator.history), evaluator.n_evaluations
    policies = sensitivity_policies(game, evaluator, costs, budget, evaluations=200 // 2)
    assert evaluator.n_evaluations == asked  # the search measured every one of them
    assert policies and all(p in measured for p in policies)
    best = max(evaluator.evaluate(p).score for p in policies)
    assert result.score >= best - 1e-6
