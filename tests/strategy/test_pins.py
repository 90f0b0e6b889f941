"""Pins (--pin PATTERN=OPTION, --keep-first-last): pinned units are not players, every method
keeps them, a forbidden pin is exit 2 and one that breaks the budget exit 3; budget
feasibility of the knapsack as a property."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import conv_chain, conv_chain_files
from hypothesis import given, settings
from hypothesis import strategies as st

from smpq_onnx.cli.main import cli
from smpq_onnx.errors import PolicyError
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.quant.options import FP32, Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.pins import resolve_pins
from smpq_onnx.strategy.selection import Infeasible, solve
from smpq_onnx.strategy.smpq import knapsack_problem, policy_of
from smpq_onnx.strategy.space import SearchSpace

W8A8, W4A4 = Option(8, 8), Option(4, 4)


def _space(hw: str = "flexible") -> tuple[SearchSpace, CostModel]:
    model = import_model(conv_chain())
    profile = load_profile(hw)
    return SearchSpace.build(model, profile), CostModel(model, profile)


def test_pins_match_globs_and_later_pins_win() -> None:
    space, _ = _space()
    pins = resolve_pins(space, ["conv*=W4A4", "conv2=W8A8", "fc=FP32"])
    assert pins == {"conv1": W4A4, "conv2": W8A8, "fc": FP32}


def test_keep_first_last_takes_the_highest_integer_option_and_pins_override_it() -> None:
    flexible, _ = _space("flexible")
    assert resolve_pins(flexible, keep_first_last=True) == {"conv1": W8A8, "fc": W8A8}
    npu, _ = _space("npu")  # W8A16 has the most bits of W4A8, W8A8, W4A16, W8A16
    assert resolve_pins(npu, keep_first_last=True) == {"conv1": Option(8, 16),
                                                       "fc": Option(8, 16)}
    assert resolve_pins(npu, ["fc=W4A8"], keep_first_last=True) == {
        "conv1": Option(8, 16), "fc": Option(4, 8)}


@pytest.mark.parametrize(("hw", "pin", "message"), [
    ("npu", "fc=FP32", "FP32 is not allowed for layer fc"),
    ("npu", "fc=W2A8", "W2A8 is not allowed for layer fc"),
    ("flexible", "nothing*=W8A8", "matches no layer"),
    ("flexible", "fc", "write PATTERN=OPTION"),
    ("flexible", "fc=W9", "cannot read bit-width option"),
])
def test_bad_pins_are_policy_errors(hw: str, pin: str, message: str) -> None:
    space, _ = _space(hw)
    with pytest.raises(PolicyError, match=message):
        resolve_pins(space, [pin])


def test_pinned_units_have_no_players_and_every_coalition_keeps_them() -> None:
    space, _ = _space()
    free = QuantizationGame(space)
    game = QuantizationGame(space, pins={"conv2": W4A4, "fc": FP32})
    assert [u.pinned for u in game.units] == [False, True, True]
    assert {p.unit for p in game.players} == {0}
    assert len(game.players) == len(free.players) // 3
    rng = np.random.default_rng(0)
    for _ in range(20):
        present = [i for i in range(len(game.players)) if rng.random() < 0.5]
        policy = game.realize(present)
        assert policy["conv2"] == W4A4 and policy["fc"] == FP32


@settings(max_examples=60, deadline=None)
@given(ratio=st.floats(0.02, 1.0), pin=st.sampled_from([None, "conv1=W8A8", "fc=W2A2"]),
       seed=st.integers(0, 10_000))
def test_a_knapsack_selection_meets_every_budget_or_is_infeasible(ratio: float, pin: str | None,
                                                                 seed: int) -> None:
    space, costs = _space()
    pins = resolve_pins(space, [pin] if pin else [])
    game = QuantizationGame(space, pins=pins)
    budget = Budget(bops=int(ratio * costs.model.total_macs * 64),
                    weight_bytes=int(costs.weight_bytes(space.uniform(W8A8)) * (0.3 + ratio)))
    rng = np.random.default_rng(seed)
    utilities = [rng.normal(size=len(unit.options)) for unit in game.units]
    try:
        policy = policy_of(game, solve(knapsack_problem(game, costs, budget, utilities)))
    except Infeasible:
        # Then even the smallest policy (W2A2 wherever not pinned) misses a budget.
        smallest = Policy({layer.name: pins.get(layer.name, Option(2, 2))
                           for layer in space.layers})
        assert not budget.fits(costs.cost(smallest))
        return
    assert budget.fits(costs.cost(policy))
    assert all(policy[name] == option for name, option in pins.items())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return conv_chain_files(tmp_path_factory.mktemp("pins"))


def _search(tiny: tuple[Path, Path], out: Path, *args: str) -> dict:
    model, data = tiny
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data), "--metric",
                                      "sqnr", "--max-evals", "40", "--out", str(out), "--json",
                                      *args])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(line["fits"] for line in report["budget"])
    return report


@pytest.mark.parametrize("method", ["shapley", "amp", "random", "uniform", "context"])
def test_every_method_keeps_the_pins(tiny: tuple[Path, Path], tmp_path: Path,
                                     method: str) -> None:
    report = _search(tiny, tmp_path, "--method", method, "--budget-bops-ratio", "0.5",
                     "--pin", "conv2=W4A4")
    assert report["pinned"] == {"conv2": "W4A4"}
    assert report["policy"]["conv2"] == {"w_bits": 4, "a_bits": 4}
    spend = report["evaluation_spend"]
    assert spend["policies"] == sum(spend["by_ratio"].values()) >= 1


def test_keep_first_last_and_a_fully_pinned_model(tiny: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    report = _search(tiny, tmp_path / "a", "--budget-bops-ratio", "0.9", "--keep-first-last")
    assert report["pinned"] == {"conv1": "W8A8", "fc": "W8A8"}
    assert report["policy"]["fc"] == {"w_bits": 8, "a_bits": 8}
    everything = _search(tiny, tmp_path / "b", "--budget-bops-ratio", "1.0",
                         "--keep-first-last", "--pin", "conv2=W4A4")
    assert everything["method_details"]["note"] == "every layer pinned"
    assert everything["policy"]["conv2"] == {"w_bits": 4, "a_bits": 4}


def test_a_pin_that_breaks_the_budget_is_exit_3(tiny: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    model, data = tiny
    result = CliRunner().invoke(cli, [
        "search", str(model), "--data", str(data), "--budget-bops-ratio", "0.1",
        "--pin", "*=W8A8", "--out", str(tmp_path)])
    assert result.exit_code == 3
    assert "pin fewer layers" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_forbidden_pin_is_exit_2(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    result = CliRunner().invoke(cli, [
        "search", str(model), "--data", str(data), "--hw", "npu", "--pin", "fc=FP32",
        "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "FP32 is not allowed for layer fc" in result.stderr
