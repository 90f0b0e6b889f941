"""The additive surrogate on every measured policy: it recovers an additive score, proposes
that score's best policy under the budget, never proposes widths it did not see, and does not
depend on the order of the measurements."""

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
from smpq_onnx.strategy.smpq import policy_of
from smpq_onnx.strategy.space import SearchSpace
from smpq_onnx.strategy.surrogate import MIN_POLICIES, fit_additive, surrogate_proposals
from smpq_onnx.strategy.window import window_around

W_TERMS = [{3: 0.0, 4: 0.02, 5: 0.03}, {3: 0.0, 4: 0.001, 5: 0.002}, {3: 0.0, 4: 0.01, 5: 0.011}]
A_TERMS = [{3: 0.0, 4: 0.015, 5: 0.016}, {3: 0.0, 4: 0.03, 5: 0.05}, {3: 0.0, 4: 0.004, 5: 0.02}]
"""Per unit and side, the score each width adds (the window of W4A4 spans widths 3-5)."""


@pytest.fixture(scope="module")
def window() -> tuple[QuantizationGame, CostModel, Budget, list[Policy]]:
    model, profile = import_model(conv_chain()), load_profile("flexible")
    game = QuantizationGame(SearchSpace.build(model, profile))
    local = game.window(*window_around(game, [Option(4, 4)] * len(game.units)))
    costs = CostModel(model, profile)
    everything = [policy_of(local, list(choice)) for choice in
                  itertools.product(*(range(len(u.options)) for u in local.units))]
    floor = costs.cost(local.realize([])).bops
    ceiling = costs.cost(local.realize(range(len(local.players)))).bops
    return local, costs, Budget(bops=int(floor + 0.45 * (ceiling - floor))), everything


def additive(game: QuantizationGame, policy: Policy) -> float:
    total = 0.9
    for k, unit in enumerate(game.units):
        option = policy[unit.layers[0]]
        total += W_TERMS[k][option.w_bits] + A_TERMS[k][option.a_bits]
    return total


def test_an_additive_score_is_recovered_and_its_best_policy_under_the_budget_proposed(
        window: tuple) -> None:
    game, costs, budget, everything = window
    rng = np.random.default_rng(0)
    sampled = [everything[i] for i in rng.choice(len(everything), 80, replace=False)]
    surrogate = fit_additive(game, {p: additive(game, p) for p in sampled})
    assert surrogate is not None and surrogate.policies == 80
    assert surrogate.loo_rmse < 0.05 * surrogate.spread
    for k, unit in enumerate(game.units):  # each option's term, up to the unit's constant
        truth = np.array([W_TERMS[k][o.w_bits] + A_TERMS[k][o.a_bits] for o in unit.options])
        fitted = surrogate.utilities[k]
        assert np.allclose(fitted - fitted.mean(), truth - truth.mean(), atol=1e-3)
    fitting = [p for p in everything if budget.fits(costs.cost(p))]
    assert 0 < len(fitting) < len(everything)  # the budget binds
    best = max(fitting, key=lambda p: additive(game, p))
    assert surrogate_proposals(game, costs, budget, surrogate, 1) == [best]


def test_widths_the_measurements_never_had_are_not_proposed(window: tuple) -> None:
    game, costs, budget, everything = window
    first = game.units[0].layers[0]
    # No measured policy has unit 0 at 3 weight bits, its cheapest: a fit that gave unseen
    # widths the average utility would spend the bits it saves elsewhere.
    measured = {p: additive(game, p) for p in everything if p[first].w_bits != 3}
    surrogate = fit_additive(game, measured)
    assert surrogate is not None
    for proposal in surrogate_proposals(game, costs, budget, surrogate, 3):
        assert proposal[first].w_bits != 3
        assert budget.fits(costs.cost(proposal))


def test_the_fit_does_not_depend_on_the_order_of_the_measurements(window: tuple) -> None:
    game, _, _, everything = window
    rng = np.random.default_rng(1)
    picked = [everything[i] for i in rng.choice(len(everything), 40, replace=False)]
    noisy = {p: additive(game, p) + float(rng.normal(0, 0.01)) for p in picked}
    shuffled = dict(reversed(list(noisy.items())))
    one, two = fit_additive(game, noisy), fit_additive(game, shuffled)
    assert one is not None and two is not None
    assert all(np.array_equal(a, b) for a, b in zip(one.utilities, two.utilities, strict=True))


def test_too_few_measurements_give_no_fit(window: tuple) -> None:
    game, _, _, everything = window
    few = {p: additive(game, p) for p in everything[:MIN_POLICIES - 1]}
    assert fit_additive(game, few) is None


def test_the_search_measures_the_surrogates_proposals_within_its_evaluations(
        tmp_path: Path) -> None:
    model, data = conv_chain_files(tmp_path)
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data), "--metric",
                                      "sqnr", "--budget-bops-ratio", "0.3", "--max-evals", "60",
                                      "--surrogate", "3", "--out", str(tmp_path / "out"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["surrogate"] == 3
    assert "policies, loo rmse" in report["method_details"]["surrogate"]
    assert all(line["fits"] for line in report["budget"])
    assert report["evaluations"] <= 60 + 6  # the budget, plus the guard's uniform options
    refused = CliRunner().invoke(cli, ["search", str(model), "--data", str(data),
                                       "--surrogate", "2", "--method", "random",
                                       "--out", str(tmp_path / "r")])
    assert refused.exit_code == 2
    assert "--surrogate works with --method shapley" in refused.output
