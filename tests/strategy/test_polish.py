"""The joint polish after the windows: on a function that is separable across units but not
across a unit's two sides, its measured cells find the exact best policy one step around the
incumbent, and it keeps the incumbent when nothing near it is better."""

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
from smpq_onnx.strategy.local import POLISH_PROPOSALS, joint_cells, joint_polish, polish_cost
from smpq_onnx.strategy.smpq import policy_of
from smpq_onnx.strategy.space import SearchSpace

WEIGHTS = (1.5, 0.5, 0.6)
COLLAPSE = 4.0
"""A unit with both sides at 3 bits loses this much more than its sides' sum."""


@dataclass
class Scored:
    score: float


class SeparableEvaluator:
    """Score = per unit, weighted log2(w * a), minus :data:`COLLAPSE` at W3A3: a unit's sides
    interact, units do not. No sample rows, so the paired test leaves the decision to the
    scores."""

    def __init__(self, game: QuantizationGame) -> None:
        self.game, self.asked = game, 0

    def value(self, policy: Policy) -> float:
        total = 0.0
        for weight, unit in zip(WEIGHTS, self.game.units, strict=True):
            o = policy[unit.layers[0]]
            total += weight * np.log2(o.w_bits * o.a_bits) - COLLAPSE * (o == Option(3, 3))
        return float(total)

    def scores(self, policies: list[Policy]) -> list[float]:
        self.asked += len(policies)
        return [self.value(p) for p in policies]

    def evaluate(self, policy: Policy) -> Scored:
        return Scored(self.value(policy))

    def outputs(self, policy: Policy) -> None:
        return None

    def paired_win_rate(self, challenger: None, incumbent: None, *, seed: int) -> None:
        return None


@pytest.fixture(scope="module")
def chain() -> tuple[QuantizationGame, CostModel]:
    model, profile = import_model(conv_chain()), load_profile("flexible")
    return QuantizationGame(SearchSpace.build(model, profile)), CostModel(model, profile)


def uniform(game: QuantizationGame, option: Option) -> Policy:
    return policy_of(game, [unit.options.index(option) for unit in game.units])


def best_near(game: QuantizationGame, costs: CostModel, budget: Budget, center: Option,
              evaluator: SeparableEvaluator) -> Policy:
    """Brute force over every policy one step around ``center`` per side."""
    near = [Option(w, a) for w in range(center.w_bits - 1, center.w_bits + 2)
            for a in range(center.a_bits - 1, center.a_bits + 2)]
    fitting = [policy for policy in (policy_of(game, [u.options.index(o) for u, o in
                                                      zip(game.units, combo, strict=True)])
                                     for combo in itertools.product(near, repeat=3))
               if budget.fits(costs.cost(policy))]
    return max(fitting, key=evaluator.value)


@pytest.mark.parametrize("share", [0.6, 0.85, 1.0])
def test_the_polish_finds_the_best_policy_one_step_around_the_incumbent(
        chain: tuple[QuantizationGame, CostModel], share: float) -> None:
    game, costs = chain
    budget = Budget(bops=int(share * costs.cost(uniform(game, Option(4, 4))).bops))
    incumbent = next(p for p in (uniform(game, o) for o in (Option(4, 4), Option(4, 3),
                                                              Option(3, 3)))
                     if budget.fits(costs.cost(p)))  # the windows' incumbent always fits
    evaluator = SeparableEvaluator(game)
    center = incumbent[game.units[0].layers[0]]
    expected = best_near(game, costs, budget, center, evaluator)
    polished = joint_polish(game, evaluator, costs, budget, incumbent, seed=0)  # type: ignore[arg-type]
    assert budget.fits(costs.cost(polished))
    assert evaluator.value(polished) == pytest.approx(evaluator.value(expected))
    assert evaluator.asked <= polish_cost(game) + 1  # cells, incumbent, proposals


def test_the_cells_are_every_joint_option_of_each_units_window(
        chain: tuple[QuantizationGame, CostModel]) -> None:
    game, _ = chain
    incumbent = uniform(game, Option(4, 4))
    cells = joint_cells(game, incumbent)
    assert len(cells) == 8 * len(game.units)  # 3 x 3 joint options, less the incumbent's
    assert polish_cost(game) == len(cells) + POLISH_PROPOSALS  # no window is wider
    edge = joint_cells(game, uniform(game, Option(8, 8)))  # no step up on either side
    assert len(edge) == 3 * len(game.units)
    for (k, option), policy in cells.items():
        moved = [u for u in game.units if policy[u.layers[0]] != Option(4, 4)]
        assert moved == [game.units[k]] and policy[game.units[k].layers[0]] == option


def test_the_polish_keeps_an_incumbent_nothing_near_it_beats(
        chain: tuple[QuantizationGame, CostModel]) -> None:
    game, costs = chain
    evaluator = SeparableEvaluator(game)
    budget = Budget(bops=costs.cost(uniform(game, Option(4, 4))).bops)
    optimum = best_near(game, costs, budget, Option(4, 4), evaluator)
    assert optimum != uniform(game, Option(4, 4))  # the collapse-free optimum is mixed
    polished = joint_polish(game, evaluator, costs, budget, optimum, seed=0)  # type: ignore[arg-type]
    assert polished == optimum


@pytest.mark.parametrize("ratio", [0.15, 0.3])
def test_the_search_keeps_evaluations_for_the_polish_within_its_count(
        tmp_path_factory: pytest.TempPathFactory, ratio: float) -> None:
    """Set aside before the windows for the widest windows, the polish runs after them on
    at least one unit (the windows can overrun their share: then on the costliest units
    that fit) and the count holds."""
    import json

    from click.testing import CliRunner
    from conftest import conv_chain_files

    from smpq_onnx.cli.main import cli

    model, data = conv_chain_files(tmp_path_factory.mktemp("chain"))
    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data), "--metric",
                                      "sqnr", "--budget-bops-ratio", str(ratio),
                                      "--max-evals", "150", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    polish = report["method_details"]["polish"]
    assert polish.split(",")[0] in {"accepted", "kept"} and " 0 of " not in polish, polish
    assert report["evaluations"] <= 150 + 6  # the count, plus the guard's uniform options


def test_a_short_polish_moves_the_costliest_units_first(
        chain: tuple[QuantizationGame, CostModel]) -> None:
    from smpq_onnx.strategy.local import polished_units

    game, costs = chain
    incumbent = uniform(game, Option(4, 4))
    full = polish_cost(game) + 1
    assert polished_units(game, costs, incumbent, full) == list(range(len(game.units)))
    bops = [sum(costs.layer_bops(name, Option(4, 4)) for name in unit.layers)
            for unit in game.units]
    assert polished_units(game, costs, incumbent, 8 + 1 + POLISH_PROPOSALS) == [
        int(np.argmax(bops))]
    assert polished_units(game, costs, incumbent, POLISH_PROPOSALS) == []
