"""Shapley estimators on small games with exact answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpq_onnx.strategy.shapley import (
    all_permutations_shapley,
    band_semivalue,
    estimate,
    exact_shapley,
    owen_coalitions,
    owen_shapley,
)


def glove_game(present):  # players 0,1 hold left gloves, 2 a right glove
    left = sum(1 for p in present if p in (0, 1))
    right = sum(1 for p in present if p == 2)
    return float(min(left, right))


def test_glove_game_hand_computed() -> None:
    # Known answer: right-glove holder gets 2/3, each left-glove holder 1/6.
    np.testing.assert_allclose(exact_shapley(3, glove_game), [1 / 6, 1 / 6, 2 / 3])
    np.testing.assert_allclose(all_permutations_shapley(3, glove_game), [1 / 6, 1 / 6, 2 / 3])


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000))
def test_efficiency_symmetry_and_dummy(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = {frozenset(c): rng.normal() for k in range(n + 1)
             for c in itertools.combinations(range(n - 1), k)}

    def value(present):  # player n-1 is a dummy: it never changes the value
        return table[frozenset(p for p in present if p != n - 1)]

    phi = exact_shapley(n, value)
    assert phi.sum() == pytest.approx(value(list(range(n))) - value([]))
    assert phi[n - 1] == pytest.approx(0.0)
    np.testing.assert_allclose(phi, all_permutations_shapley(n, value), atol=1e-12)


def interaction_game(present):
    """Additive part plus a pairwise interaction and a threshold (like a collapsing network)."""
    s = set(present)
    weights = np.array([0.3, -0.2, 0.1, -0.4, 0.25, 0.05])
    v = sum(weights[i] for i in s)
    v += 0.5 if {0, 3} <= s else 0.0
    v -= 0.3 if len(s & {1, 2, 4}) >= 2 else 0.0
    return float(v)


@pytest.mark.parametrize("name,samples", [("permutation", 400), ("antithetic", 200),
                                          ("owen", 60)])
def test_estimators_converge_within_their_standard_error(name: str, samples: int) -> None:
    exact = exact_shapley(6, interaction_game)
    result = estimate(name, 6, interaction_game, samples=samples,
                      rng=np.random.default_rng(1))
    assert np.all(result.stderr > 0)
    assert np.all(np.abs(result.phi - exact) <= 4 * result.stderr + 1e-9), (result.phi, exact)


def test_permutation_estimates_are_exact_on_additive_games() -> None:
    weights = np.array([0.5, -1.0, 2.0, 0.25])
    result = estimate("permutation", 4, lambda p: float(weights[list(p)].sum()), samples=3,
                      rng=np.random.default_rng(0))
    np.testing.assert_allclose(result.phi, weights)
    # Each permutation satisfies efficiency exactly when nothing truncates.
    assert result.phi.sum() == pytest.approx(weights.sum())


def test_truncation_zeroes_the_rest_of_a_permutation() -> None:
    calls = []

    def value(present):
        calls.append(len(present))
        return 1.0 - 0.4 * len(present)

    result = estimate("permutation", 5, value, samples=1, rng=np.random.default_rng(0),
                      truncate_below=0.5)
    assert max(calls) == 2  # V drops below 0.5 at the second player: the walk stops
    assert np.count_nonzero(result.phi) == 2


def test_same_seed_same_estimate() -> None:
    a = estimate("antithetic", 6, interaction_game, samples=5, rng=np.random.default_rng(7))
    b = estimate("antithetic", 6, interaction_game, samples=5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.phi, b.phi)


@pytest.mark.parametrize("name", ["permutation", "antithetic", "owen"])
@pytest.mark.parametrize("truncate_below", [None, 0.5])
def test_batches_give_the_one_by_one_estimate(name: str, truncate_below: float | None) -> None:
    """Executors get coalitions in batches; the estimate must not change with that."""
    batches: list[int] = []

    def values(coalitions: list[list[int]]) -> list[float]:
        batches.append(len(coalitions))
        return [1.0 - 0.08 * len(c) + interaction_game(c) for c in coalitions]

    def value(present):
        return 1.0 - 0.08 * len(present) + interaction_game(present)

    one = estimate(name, 6, value, samples=4, rng=np.random.default_rng(3),
                   truncate_below=truncate_below)
    batched = estimate(name, 6, value, samples=4, rng=np.random.default_rng(3),
                       truncate_below=truncate_below, values=values)
    np.testing.assert_array_equal(one.phi, batched.phi)
    np.testing.assert_array_equal(one.stderr, batched.stderr)
    if name == "owen":
        assert batches == [4 * 2 * 7]  # a whole round (4 samples x 2 levels x 7) is one batch
    else:
        assert max(batches) > 1


def test_band_values_hand_computed() -> None:
    """At a single q each player's marginal to the empty coalition weighs 1 - q, to the
    other player q; the full band gives the Shapley value."""
    table = {(): 0.0, (0,): 1.0, (1,): 2.0, (0, 1): 5.0}

    def value(present) -> float:
        return table[tuple(sorted(present))]

    np.testing.assert_allclose(band_semivalue(2, value, (0.25, 0.25)),
                               [0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 4])
    np.testing.assert_allclose(band_semivalue(2, value, (0.0, 1.0)), exact_shapley(2, value))
    np.testing.assert_allclose(band_semivalue(3, glove_game, (0.0, 1.0)),
                               [1 / 6, 1 / 6, 2 / 3])


def test_banded_owen_draws_its_coalitions_in_the_band_and_is_unbiased() -> None:
    rng = np.random.default_rng(0)
    levels = owen_coalitions(400, 4, rng, band=(0.2, 0.3), paired=False)
    assert len(levels) == 4
    assert all(0.15 < len(level[0]) / 400 < 0.35 for level in levels)
    band = (0.1, 0.5)
    expected = band_semivalue(3, glove_game, band)
    estimates = [owen_shapley(3, glove_game, samples=4, rng=np.random.default_rng(seed),
                              band=band, paired=seed % 2 == 0).phi for seed in range(400)]
    np.testing.assert_allclose(np.mean(estimates, axis=0), expected, atol=0.03)
