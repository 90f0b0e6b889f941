"""The budget-local SMPQ search on a tiny model: fits every budget, never below the uniform
guard, windows around the incumbent, the paper's game still one flag away."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import conv_chain_files

from smpq_onnx.cli.main import cli

W8A8_BOPS = (6912 + 1536 + 1920) * 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return conv_chain_files(tmp_path_factory.mktemp("tiny"))


def search(tiny: tuple[Path, Path], out: Path, *extra: str) -> dict:
    model, data = tiny
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data), "--metric",
                                      "sqnr", "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("ratio", [0.12, 0.2, 0.3, 0.45, 0.7])
def test_the_local_game_fits_the_budget_and_never_loses_to_the_best_uniform(
        tiny: tuple[Path, Path], tmp_path: Path, ratio: float) -> None:
    common = ["--budget-bops-ratio", str(ratio), "--max-evals", "80"]
    local = search(tiny, tmp_path / "local", *common)
    uniform = search(tiny, tmp_path / "uniform", *common, "--method", "uniform")
    assert local["settings"]["game"] == "local"
    assert all(line["fits"] for line in local["budget"])
    assert local["costs"]["bops"] <= ratio * W8A8_BOPS
    assert local["final"] >= uniform["final"]
    assert local["evaluations"] <= 80 + 6  # the budget, plus the guard's uniform options
    assert local["contributions"]  # the last window's players


def test_windows_and_samples_are_the_users_knobs(tiny: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    one = search(tiny, tmp_path / "one", "--rounds", "1", "--samples", "1")
    two = search(tiny, tmp_path / "two", "--rounds", "2", "--samples", "1")
    assert one["method_details"]["windows"] == 1 and two["method_details"]["windows"] == 2
    assert two["evaluations"] > one["evaluations"]


def test_the_papers_game_is_kept_behind_a_flag(tiny: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    paper = search(tiny, tmp_path / "paper", "--game", "global", "--samples", "1",
                   "--rounds", "1")
    assert paper["settings"]["game"] == "global"
    # Its players cover every legal width of a side, not one step around a center.
    widths = {c["w_bits"] for c in paper["contributions"] if c["side"] == "w"}
    assert widths == {2, 3, 4, 5, 6, 7, 8}
    model, data = tiny
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data),
                                      "--semantics", "mix", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "add --game global" in result.output.strip().splitlines()[-1]


def _chain_game(profile_name: str = "flexible"):
    """The conv chain's full game and cost model on ``profile_name``."""
    from conftest import conv_chain

    from smpq_onnx.hardware.cost import CostModel
    from smpq_onnx.hardware.profile import load_profile
    from smpq_onnx.model.importer import import_model
    from smpq_onnx.strategy.game import QuantizationGame
    from smpq_onnx.strategy.space import SearchSpace

    model, profile = import_model(conv_chain()), load_profile(profile_name)
    return QuantizationGame(SearchSpace.build(model, profile)), CostModel(model, profile)


def _window_game(profile_name: str = "flexible", radius: int = 1):
    from smpq_onnx.quant.options import Option
    from smpq_onnx.strategy.window import window_around

    game, costs = _chain_game(profile_name)
    center = [Option(4, 4) if Option(4, 4) in u.options else u.options[0] for u in game.units]
    return game.window(*window_around(game, center, radius)), costs


@pytest.mark.parametrize("radius", [1, 2])
def test_a_window_spans_radius_steps_either_side_per_side(radius: int) -> None:
    local, _ = _window_game(radius=radius)
    widths = set(range(4 - radius, 4 + radius + 1))  # flexible: 2-8 on both sides, centre W4A4
    for unit, floor in zip(local.units, local.floors or (), strict=True):
        assert {o.w_bits for o in unit.options} == widths
        assert {o.a_bits for o in unit.options} == widths
        assert floor.w_bits == floor.a_bits == 4 - radius


def test_the_budget_band_is_centred_where_coalitions_cost_the_budget() -> None:
    import numpy as np

    from smpq_onnx.hardware.budget import Budget
    from smpq_onnx.strategy.local import BAND_HALF_WIDTH, budget_band

    local, costs = _window_game()
    n = len(local.players)
    floor_bops = costs.cost(local.realize([])).bops
    ceiling_bops = costs.cost(local.realize(range(n))).bops
    assert budget_band(local, costs, Budget(bops=ceiling_bops * 2), seed=0) == (
        1.0 - BAND_HALF_WIDTH, 1.0)
    assert budget_band(local, costs, Budget(bops=floor_bops), seed=0)[0] == 0.0
    budget = Budget(bops=(floor_bops + ceiling_bops) // 2)
    low, high = budget_band(local, costs, budget, seed=0)
    assert high - low == pytest.approx(2 * BAND_HALF_WIDTH)
    q = (low + high) / 2
    rng = np.random.default_rng(1)
    usage = [costs.cost(local.realize(np.flatnonzero(rng.random(n) < q).tolist())).bops
             / budget.bops for _ in range(400)]
    assert float(np.mean(usage)) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("share", [5, 30, 60, 400])
def test_a_windows_estimator_stays_within_its_share(share: int) -> None:
    """With the control variate the table comes first; single levels when two pairs do not
    fit; the planned evaluations never exceed the share (the table alone excepted)."""
    from smpq_onnx.hardware.budget import Budget
    from smpq_onnx.strategy.local import window_settings
    from smpq_onnx.strategy.smpq import SearchSettings, expected_sample_cost

    local, costs = _window_game()
    n = len(local.players)
    budget = Budget(bops=costs.cost(local.realize(range(0, n, 2))).bops)
    sized = window_settings(local, costs, budget, SearchSettings(estimator="owen-cv"),
                            share=share, samples=None, seed=0)
    table_and_proposals = n + 1 + 2 * sized.candidates  # two sets of proposals
    planned = table_and_proposals + sized.samples * expected_sample_cost(
        local, "owen", paired=sized.paired_levels)
    assert planned <= max(share, table_and_proposals)
    assert not sized.paired_levels or sized.samples >= 2
    assert 0.0 <= sized.q_band[0] < sized.q_band[1] <= 1.0


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_the_most_bits_start_fits_and_no_unit_can_gain_a_bit_within_the_budget(
        ratio: float) -> None:
    """The knapsack's most-bits policy is optimal: raising any one unit one step on either side
    breaks the budget, and it has at least the bits of every uniform policy that fits."""
    import numpy as np

    from smpq_onnx.hardware.budget import Budget
    from smpq_onnx.strategy.smpq import uniform_candidates
    from smpq_onnx.strategy.start import most_bits_policies

    game, costs = _chain_game()
    budget = Budget(bops=int(ratio * W8A8_BOPS))

    def fits(policy: dict) -> bool:
        return budget.fits(costs.cost(policy))

    def bits(policy: dict) -> float:
        return sum(np.log2(policy[u.layers[0]].w_bits * policy[u.layers[0]].a_bits)
                   for u in game.units)

    best, second = most_bits_policies(game, costs, budget)
    assert fits(best) and fits(second) and best != second and bits(best) >= bits(second)
    for unit in game.units:
        option = best[unit.layers[0]]
        raises = [o for o in unit.options if (o.w_bits, o.a_bits) > (option.w_bits, option.a_bits)
                  and min(o.w_bits - option.w_bits, o.a_bits - option.a_bits) == 0]
        for raised in raises:  # one side more bits, the other kept
            assert not fits({**best, **{layer: raised for layer in unit.layers}})
    assert all(bits(best) >= bits(u) for u in uniform_candidates(game, costs, budget))


def test_final_candidates_break_score_ties_the_same_whatever_order_the_scores_came_in() -> None:
    """Executors return scores in any order: the tie-break must not read the arrival order."""
    import random

    from smpq_onnx.hardware.budget import Budget
    from smpq_onnx.quant.options import Option
    from smpq_onnx.quant.policy import Policy
    from smpq_onnx.strategy.local import MEASURED_CANDIDATES, final_candidates

    game, costs = _chain_game()
    budget = Budget(bops=W8A8_BOPS)
    tied = [Policy({layer: option for unit, option in zip(game.units, options, strict=True)
                    for layer in unit.layers})
            for options in ([Option(4, 4)] * len(game.units),
                            [Option(4, 4)] * (len(game.units) - 1) + [Option(2, 8)],
                            [Option(2, 8)] + [Option(4, 4)] * (len(game.units) - 1),
                            [Option(8, 2)] + [Option(4, 4)] * (len(game.units) - 1),
                            [Option(3, 5)] * len(game.units))]
    scores = {p: 0.5 for p in tied} | {p: 0.1 for p in tied[:1]}  # one worse, the rest tied
    incumbent = tied[0]
    orders = [list(scores.items()) for _ in range(6)]
    for n, order in enumerate(orders):
        random.Random(n).shuffle(order)
    chosen = [final_candidates(game, costs, budget, incumbent, dict(order), [])
              for order in orders]
    assert all(c == chosen[0] for c in chosen)
    assert chosen[0][0] == incumbent and len(chosen[0]) == min(len(tied), MEASURED_CANDIDATES + 1)
    tied_bops = [costs.cost(p).bops for p in chosen[0][1:]]
    assert tied_bops == sorted(tied_bops)  # among equal scores, fewer BOPs first
