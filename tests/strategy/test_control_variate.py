"""The separable control variate: exact on additive games, unbiased otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import conv_chain

from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.quant.options import FLOAT_BITS
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.control_variate import SeparableControlVariate
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.shapley import band_semivalue, exact_shapley, owen_shapley
from smpq_onnx.strategy.space import SearchSpace


def small_game(profile: str) -> QuantizationGame:
    return QuantizationGame(SearchSpace.build(import_model(conv_chain()), load_profile(profile)))


def side_loss(bits: int, layer: int) -> float:
    return 0.0 if bits == FLOAT_BITS else (layer + 1) * 0.01 * math.exp(-bits / 3)


def additive(policy: Policy) -> float:
    return 1.0 - sum(side_loss(o.w_bits, k) + 0.5 * side_loss(o.a_bits, k)
                     for k, o in enumerate(policy.values()))


def interacting(policy: Policy) -> float:
    """Additive plus a product of the losses (quantization errors compound)."""
    losses = [side_loss(o.w_bits, k) + side_loss(o.a_bits, k)
              for k, o in enumerate(policy.values())]
    return additive(policy) - 20 * math.prod(1 + x for x in losses) + 20


@pytest.mark.parametrize("profile", ["mcu", "npu"])  # joint (W, A) players; split sides
def test_on_an_additive_game_the_control_variate_is_the_exact_answer(profile: str) -> None:
    game = small_game(profile)
    variate = SeparableControlVariate(game, additive)
    n = len(game.players)
    for present in ([], [0], list(range(n)), list(range(0, n, 2))):
        value = additive(game.realize(present)) - additive(game.realize([]))
        assert variate.value(present, None) == pytest.approx(value, abs=1e-12)
    phi = variate.shapley(None)
    assert phi.sum() == pytest.approx(additive(game.realize(range(n)))
                                      - additive(game.realize([])), abs=1e-12)


def test_on_an_interacting_game_it_stays_unbiased_and_cuts_the_error() -> None:
    game = small_game("mcu")  # 3 units x 3 joint options: 9 players, exact is cheap
    n = len(game.players)

    def value(present) -> float:
        return interacting(game.realize(present))

    exact = exact_shapley(n, value)
    variate = SeparableControlVariate(game, interacting)
    plain_errors, cv_errors = [], []
    for seed in range(20):
        plain = owen_shapley(n, value, samples=2, rng=np.random.default_rng(seed))
        residual = owen_shapley(n, lambda s: value(s) - variate.value(s, None), samples=2,
                                rng=np.random.default_rng(seed))
        cv = residual.phi + variate.shapley(None)
        plain_errors.append(plain.phi - exact)
        cv_errors.append(cv - exact)
    bias = np.abs(np.mean(cv_errors, axis=0))
    rmse_plain = float(np.sqrt(np.mean(np.square(plain_errors))))
    rmse_cv = float(np.sqrt(np.mean(np.square(cv_errors))))
    assert bias.max() < 3 * rmse_cv / math.sqrt(20) + 1e-12
    assert rmse_cv < 0.5 * rmse_plain


@pytest.mark.parametrize("profile", ["mcu", "npu"])
def test_the_ceiling_anchor_is_exact_on_an_additive_game_too(profile: str) -> None:
    """Measured by lowering one side at a time from the full game (AMP's phase 1), g still
    equals V - V(all present) on every coalition of an additive game, so its exact values
    over any q-band are V's, found by enumerating all coalitions."""
    game = small_game(profile)
    n = len(game.players)
    variate = SeparableControlVariate(game, additive, anchor="ceiling")
    full = additive(game.realize(range(n)))
    for present in ([], [0], list(range(n)), list(range(1, n, 2))):
        assert variate.value(present, None) == pytest.approx(
            additive(game.realize(present)) - full, abs=1e-12)
    for band in ((0.0, 1.0), (0.1, 0.4), (0.3, 0.3)):
        expected = band_semivalue(n, lambda s: additive(game.realize(s)), band)
        np.testing.assert_allclose(variate.shapley(None, band), expected, atol=1e-12)
    assert variate.shapley(None).sum() == pytest.approx(full - additive(game.realize([])),
                                                        abs=1e-12)


def test_the_ceiling_table_costs_one_evaluation_per_player_and_one_for_the_anchor() -> None:
    game = small_game("mcu")
    seen: set[Policy] = set()

    def counted(policy: Policy) -> float:
        seen.add(policy)
        return additive(policy)

    SeparableControlVariate(game, counted, anchor="ceiling")
    assert len(seen) == len(game.players) + 1


def test_an_unknown_anchor_is_refused() -> None:
    with pytest.raises(ValueError, match="anchor"):
        SeparableControlVariate(small_game("npu"), additive, anchor="middle")
