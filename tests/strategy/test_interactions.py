"""Pair terms measured at the budget's proposal: exact on a known second-order function, and
the knapsack with them finds that function's best policy under the budget."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import conv_chain, conv_chain_files

from smpq_onnx.cli.main import cli
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.interactions import (
    interaction_proposals,
    measured_pairs,
    most_lowered,
    pair_cost,
)
from smpq_onnx.strategy.selection import best_k
from smpq_onnx.strategy.smpq import choice_of, knapsack_problem, policy_of
from smpq_onnx.strategy.space import SearchSpace
from smpq_onnx.strategy.window import window_around

PENALTY = -10.0
"""Units 0 and 2 at the first-order proposal's options together lose this much more."""


@pytest.fixture(scope="module")
def window() -> tuple[QuantizationGame, CostModel, Budget, list[np.ndarray]]:
    model, profile = import_model(conv_chain()), load_profile("flexible")
    game = QuantizationGame(SearchSpace.build(model, profile))
    local = game.window(*window_around(game, [Option(4, 4)] * len(game.units)))
    costs = CostModel(model, profile)
    floor = costs.cost(local.realize([])).bops
    ceiling = costs.cost(local.realize(range(len(local.players)))).bops
    budget = Budget(bops=int(floor + 0.4 * (ceiling - floor)))
    weights = [1.5, 0.5, 0.6]  # every unit must go below the window's top (W5A5)
    utilities = [np.array([w * np.log2(o.w_bits * o.a_bits) for o in unit.options])
                 for w, unit in zip(weights, local.units, strict=True)]
    return local, costs, budget, utilities


def first_order_choice(window: tuple) -> list[int]:
    local, costs, budget, utilities = window
    return best_k(knapsack_problem(local, costs, budget, utilities), 1)[0]


def second_order(window: tuple, penalty: float):
    """f = the first-order utilities plus ``penalty`` when units 0 and 2 both keep the
    first-order proposal's options."""
    local, _, _, utilities = window
    c = first_order_choice(window)

    def f(policy: Policy) -> float:
        x = choice_of(local, policy)
        pair = penalty if (x[0], x[2]) == (c[0], c[2]) else 0.0
        return float(sum(u[o] for u, o in zip(utilities, x, strict=True))) + pair

    return f


def test_the_units_that_lose_most_are_measured_first(window: tuple) -> None:
    local, _, _, utilities = window
    top = choice_of(local, local.realize(range(len(local.players))))
    c = first_order_choice(window)
    assert [local.units[k].options[c[k]] for k in range(3)] == [
        Option(5, 3), Option(4, 4), Option(4, 4)]
    # Losses from W5A5: 1.5 log2(25/15) = 1.11, 0.5 log2(25/16) = 0.32, 0.6 log2(25/16) = 0.39.
    assert most_lowered(local, c, top, utilities, 3) == [0, 2, 1]
    assert most_lowered(local, c, top, utilities, 2) == [0, 2]
    assert pair_cost(2) == 3 and pair_cost(5) == 15


@pytest.mark.parametrize("penalty", [PENALTY, 0.0, 2.5])
def test_the_mixed_difference_is_the_pair_term_exactly(window: tuple, penalty: float) -> None:
    local = window[0]
    f = second_order(window, penalty)
    c = first_order_choice(window)
    top = choice_of(local, local.realize(range(len(local.players))))
    calls: list[int] = []

    def score_many(policies: list[Policy]) -> list[float]:
        calls.append(len(policies))
        return [f(p) for p in policies]

    terms = measured_pairs(local, score_many, c, top, [0, 1, 2])
    assert terms == {(0, c[0], 1, c[1]): pytest.approx(0.0),
                     (0, c[0], 2, c[2]): pytest.approx(penalty),
                     (1, c[1], 2, c[2]): pytest.approx(0.0)}
    assert calls == [1 + pair_cost(3)]  # one batch


def test_with_the_measured_pair_the_knapsack_finds_the_true_optimum(window: tuple) -> None:
    local, costs, budget, utilities = window
    f = second_order(window, PENALTY)
    c = first_order_choice(window)
    proposals, terms = interaction_proposals(
        local, lambda ps: [f(p) for p in ps], costs, budget, utilities,
        policy_of(local, c), units=3, count=2)
    assert terms[(0, c[0], 2, c[2])] == pytest.approx(PENALTY)
    best = proposals[0]
    assert budget.fits(costs.cost(best))
    assert (choice_of(local, best)[0], choice_of(local, best)[2]) != (c[0], c[2])
    fitting = [policy_of(local, list(x)) for x in itertools.product(
        *(range(len(u.options)) for u in local.units))]
    optimum = max(f(p) for p in fitting
                  if budget.fits(costs.cost(p)))
    assert f(best) == pytest.approx(optimum)
    assert f(best) > f(policy_of(local, c))


def test_fewer_than_two_lowered_units_measure_nothing(window: tuple) -> None:
    local, costs, budget, utilities = window
    ceiling = local.realize(range(len(local.players)))
    calls: list[int] = []
    proposals, terms = interaction_proposals(
        local, lambda ps: calls.append(len(ps)) or [0.0] * len(ps), costs, budget,
        utilities, ceiling, units=4, count=2)
    assert (proposals, terms, calls) == ([], {}, [])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return conv_chain_files(tmp_path_factory.mktemp("tiny"))


def test_the_search_measures_pairs_when_asked_and_still_fits(tiny: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    model, data = tiny
    result = CliRunner().invoke(cli, [
        "search", str(model), "--data", str(data), "--metric", "sqnr", "--out",
        str(tmp_path / "m"), "--json", "--budget-bops-ratio", "0.3", "--max-evals", "120",
        "--interactions", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(line["fits"] for line in report["budget"])
    assert report["settings"]["interactions"] == 3
    per_window = report["method_details"]["pair_terms_per_window"].split(",")
    # 3 units: 3 pairs when all are below the window's top, 1 when two are, else none
    assert set(per_window) <= {"0", "1", "3"} and set(per_window) - {"0"}


def test_interactions_outside_the_local_game_is_a_one_line_error(tiny: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    model, data = tiny
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data), "--out",
                                      str(tmp_path / "m"), "--game", "global",
                                      "--interactions", "2"])
    assert result.exit_code == 2
    assert "--interactions works with --method shapley --game local" in (
        result.output.strip().splitlines()[-1])
