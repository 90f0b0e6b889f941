"""Coalition -> policy: reference precision, hard and mix semantics (ALGORITHMS.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smpq_onnx.errors import PolicyError
from smpq_onnx.example import example_model_path
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.quant.options import FP32, Mixture, Option
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.space import SearchSpace


@pytest.fixture(scope="module")
def model():
    return import_model(example_model_path())


def game(model, profile: str = "flexible", **options) -> QuantizationGame:
    return QuantizationGame(SearchSpace.build(model, load_profile(profile)), **options)


def index(g: QuantizationGame, unit: int, side: str, w: int, a: int) -> int:
    return next(i for i, p in enumerate(g.players)
                if (p.unit, p.side, p.w_bits, p.a_bits) == (unit, side, w, a))


def unit_option(g: QuantizationGame, policy, unit: int) -> Option:
    return policy[g.units[unit].layers[0]]


def test_absent_units_take_the_reference_precision(model) -> None:
    assert set(game(model).realize([]).values()) == {FP32}
    g = game(model, reference=Option(8, 8))
    assert set(g.realize([]).values()) == {Option(8, 8)}
    # A present weight player leaves the unit's activation side at the reference.
    policy = g.realize([index(g, 0, "w", 3, 32)])
    assert unit_option(g, policy, 0) == Option(3, 8)
    assert unit_option(g, policy, 1) == Option(8, 8)


def test_a_reference_the_profile_forbids_is_a_clear_error(model) -> None:
    with pytest.raises(PolicyError, match="reference precision W2A2 is not legal"):
        game(model, "mcu", reference=Option(2, 2))


def test_hard_semantics_keeps_the_option_of_largest_alpha_ties_to_more_bits(model) -> None:
    g = game(model)
    w3, w6 = index(g, 0, "w", 3, 32), index(g, 0, "w", 6, 32)
    assert unit_option(g, g.realize([w3, w6]), 0) == Option(6, 32)
    alpha = np.zeros(len(g.players))
    alpha[w3] = 0.1
    assert unit_option(g, g.realize([w3, w6], alpha), 0) == Option(3, 32)


def test_mix_semantics_weights_present_widths_by_softmax_of_alpha(model) -> None:
    g = game(model, semantics="mix")
    w3, w6 = index(g, 0, "w", 3, 32), index(g, 0, "w", 6, 32)
    a4 = index(g, 0, "a", 32, 4)
    alpha = np.zeros(len(g.players))
    alpha[w6] = math.log(3.0)
    option = unit_option(g, g.realize([w3, w6, a4], alpha), 0)
    assert isinstance(option, Mixture)
    assert option.w_shares == ((3, 0.25), (6, 0.75)) and option.a_shares == ((4, 1.0),)
    # One present width per side is a plain option, not a mixture.
    assert unit_option(g, g.realize([w3, a4], alpha), 0) == Option(3, 4)


def test_mix_of_joint_players_mixes_each_side_with_summed_shares(model) -> None:
    g = game(model, "mcu", semantics="mix")  # W8A8, W4A8, W8A16: not a grid, joint players
    assert not g.split_sides
    players = [index(g, 0, "wa", w, a) for w, a in ((8, 8), (4, 8), (8, 16))]
    option = unit_option(g, g.realize(players), 0)
    assert isinstance(option, Mixture)
    third, two_thirds = round(1 / 3, 9), round(2 / 3, 9)
    assert option.w_shares == ((4, third), (8, two_thirds))
    assert option.a_shares == ((8, two_thirds), (16, third))


def test_a_window_game_plays_one_step_around_its_center(model) -> None:
    from smpq_onnx.strategy.window import window_around

    full = game(model)
    center = [Option(4, 4)] * len(full.units)
    local = full.window(*window_around(full, center))
    assert all(set(unit.options) == {Option(w, a) for w in (3, 4, 5) for a in (3, 4, 5)}
               for unit in local.units)
    # Absent players mean the floor, one step below the center on both sides.
    assert all(unit_option(local, local.realize([]), k) == Option(3, 3)
               for k in range(len(local.units)))
    assert {(p.side, p.w_bits, p.a_bits) for p in local.players if p.unit == 0} == \
        {("w", 4, 32), ("w", 5, 32), ("a", 32, 4), ("a", 32, 5)}
    present = [index(local, 0, "w", 5, 32), index(local, 0, "w", 4, 32),
               index(local, 0, "a", 32, 4)]
    assert unit_option(local, local.realize(present), 0) == Option(5, 4)  # most bits present
    assert unit_option(local, local.realize(present), 1) == Option(3, 3)
    phi = np.arange(len(local.players), dtype=float) + 1.0
    table = local.unit_utilities(phi)[0]
    assert table[Option(3, 3)] == 0.0  # the floor has no player
    assert table[Option(5, 3)] == phi[index(local, 0, "w", 5, 32)]
    assert table[Option(4, 5)] == phi[index(local, 0, "w", 4, 32)] + phi[
        index(local, 0, "a", 32, 5)]


def test_a_window_at_the_edge_of_the_legal_widths_has_no_step_beyond_it(model) -> None:
    from smpq_onnx.strategy.window import window_around

    full = game(model)
    center = [Option(2, 8)] * len(full.units)
    floors, windows = window_around(full, center)
    assert set(floors) == {Option(2, 7)}  # no weight width below 2: the floor keeps W2
    assert all({o.w_bits for o in w} == {2, 3} and {o.a_bits for o in w} == {7, 8}
               for w in windows)
