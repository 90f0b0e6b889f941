"""The multiple-choice knapsack on hand-computed tables."""

from __future__ import annotations

import ctypes
import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpq_onnx.strategy.selection import (
    Infeasible,
    KnapsackProblem,
    MemoryModel,
    best_k,
    native_stdout_silenced,
    solve,
)

UTIL = [np.array([-0.30, -0.05, 0.0]), np.array([-0.20, -0.10, 0.0]),
        np.array([-0.50, -0.01, 0.0])]
BOPS = [np.array([1.0, 4.0, 16.0]), np.array([2.0, 8.0, 32.0]), np.array([1.0, 4.0, 16.0])]


def test_unconstrained_takes_the_best_option_everywhere() -> None:
    assert solve(KnapsackProblem(UTIL)) == [2, 2, 2]


def test_single_budget_hand_computed() -> None:
    # Budget 20: all-middle costs 4 + 8 + 4 = 16 (utility -0.16); (2, 0, 1) costs 16 + 2 + 4
    # = 22 > 20; (1, 1, 1) is the best that fits? (0, 2, ...) costs >= 33. Enumerated below.
    problem = KnapsackProblem(UTIL, {"bops": BOPS}, {"bops": 20.0})
    choice = solve(problem)
    assert choice == [1, 1, 1]
    best = max((c for c in itertools.product(range(3), repeat=3)
                if sum(BOPS[k][o] for k, o in enumerate(c)) <= 20),
               key=lambda c: sum(UTIL[k][o] for k, o in enumerate(c)))
    assert list(best) == choice


def test_two_budgets_hold_at_once() -> None:
    flash = [np.array([10.0, 20.0, 40.0]), np.array([5.0, 10.0, 20.0]),
             np.array([10.0, 20.0, 40.0])]
    problem = KnapsackProblem(UTIL, {"bops": BOPS, "weight_bytes": flash},
                              {"bops": 40.0, "weight_bytes": 60.0})
    choice = solve(problem)
    assert sum(BOPS[k][o] for k, o in enumerate(choice)) <= 40
    assert sum(flash[k][o] for k, o in enumerate(choice)) <= 60
    # (1, 2, 1): BOPs 4 + 32 + 4 = 40, flash 20 + 20 + 20 = 60, utility -0.06: the best;
    # (2, 2, 1) would need BOPs 52, (2, 1, 1) flash 70.
    assert choice == [1, 2, 1]


def test_peak_memory_is_a_max_over_live_sets() -> None:
    # Buffer 0 is read by unit 0 and unit 1 (bytes by option), buffer 1 by unit 2; the two
    # buffers are live together at one step, so their sum must fit.
    sizes = np.array([8.0, 16.0, 32.0])
    memory = MemoryModel([{0: sizes, 1: sizes}, {2: sizes}], np.array([0.0, 0.0]),
                         np.array([[True, False], [True, True]]), limit=40.0)
    choice = solve(KnapsackProblem(UTIL, memory=memory))
    width0 = max(sizes[choice[0]], sizes[choice[1]])
    assert width0 + sizes[choice[2]] <= 40
    # Exhaustive check of optimality.
    feasible = [c for c in itertools.product(range(3), repeat=3)
                if max(sizes[c[0]], sizes[c[1]]) + sizes[c[2]] <= 40]
    best = max(sum(UTIL[k][o] for k, o in enumerate(c)) for c in feasible)
    assert sum(UTIL[k][o] for k, o in enumerate(choice)) == pytest.approx(best)


def test_infeasible_and_best_k() -> None:
    with pytest.raises(Infeasible):
        solve(KnapsackProblem(UTIL, {"bops": BOPS}, {"bops": 3.0}))
    top = best_k(KnapsackProblem(UTIL, {"bops": BOPS}, {"bops": 20.0}), 3)
    scores = [sum(UTIL[k][o] for k, o in enumerate(c)) for c in top]
    assert len({tuple(c) for c in top}) == 3 and scores == sorted(scores, reverse=True)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.2, 1.0))
def test_budget_always_met_and_optimal(seed: int, fraction: float) -> None:
    rng = np.random.default_rng(seed)
    util = [np.sort(rng.normal(size=3)) for _ in range(4)]
    cost = [np.sort(rng.uniform(1, 10, size=3)) for _ in range(4)]
    budget = fraction * sum(c.max() for c in cost)
    assert_optimal_against_brute_force(KnapsackProblem(util, {"bops": cost},
                                                       {"bops": budget}))


def assert_optimal_against_brute_force(problem: KnapsackProblem) -> None:
    """``solve`` meets the budget and reaches the best objective of every feasible choice
    (or says there is none)."""
    cost, budget = problem.costs["bops"], problem.budgets["bops"]
    sizes = [range(len(u)) for u in problem.utilities]
    feasible = [c for c in itertools.product(*sizes)
                if sum(cost[k][o] for k, o in enumerate(c)) <= budget]
    if not feasible:
        with pytest.raises(Infeasible):
            solve(problem)
        return
    choice = solve(problem)
    assert sum(cost[k][o] for k, o in enumerate(choice)) <= budget + 1e-9
    best = max(problem.objective(c) for c in feasible)
    assert problem.objective(choice) == pytest.approx(best, abs=1e-6)


def test_a_pairwise_penalty_keeps_two_sensitive_units_from_failing_together() -> None:
    # Alone, each unit's low option loses 1; together they lose 1 + 1 + 5 (hand-computed).
    util = [np.array([0.0, -1.0]), np.array([0.0, -1.0]), np.array([0.0, -2.5])]
    bops = [np.array([4.0, 1.0])] * 3
    pairs = {(0, 1, 1, 1): -5.0}
    budget = {"bops": 8.0}  # two of the three units must take their low option
    without = solve(KnapsackProblem(util, {"bops": bops}, budget))
    assert without == [1, 1, 0]  # -2 beats -3.5 when the pair is unseen
    problem = KnapsackProblem(util, {"bops": bops}, budget, pairs=pairs)
    choice = solve(problem)
    assert sorted([choice[0], choice[1]]) == [0, 1] and choice[2] == 1  # -3.5 beats -7
    assert problem.objective(choice) == pytest.approx(-3.5)
    assert problem.objective([1, 1, 0]) == pytest.approx(-7.0)


def test_a_pairwise_bonus_is_taken_only_when_both_options_are() -> None:
    util = [np.array([0.0, 2.0]), np.array([0.0, -1.0])]
    bops = [np.array([0.0, 2.0]), np.array([0.0, 2.0])]
    pairs = {(0, 1, 1, 1): 3.0}
    assert solve(KnapsackProblem(util, {"bops": bops}, {"bops": 4.0}, pairs=pairs)) == [1, 1]
    assert solve(KnapsackProblem(util, {"bops": bops}, {"bops": 3.0}, pairs=pairs)) == [1, 0]
    with pytest.raises(ValueError, match="two different units"):
        solve(KnapsackProblem(util, {"bops": bops}, {"bops": 4.0}, pairs={(0, 1, 0, 0): 1.0}))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.3, 1.0))
def test_pairwise_terms_optimal_against_brute_force(seed: int, fraction: float) -> None:
    rng = np.random.default_rng(seed)
    util = [rng.normal(size=3) for _ in range(4)]
    cost = [np.sort(rng.uniform(1, 10, size=3)) for _ in range(4)]
    pairs = {(k, o, m, p): float(rng.normal(scale=2.0))
             for k, m in [(0, 1), (1, 3), (0, 2)] for o in range(3) for p in range(3)
             if rng.random() < 0.5}
    budget = fraction * sum(c.max() for c in cost)
    assert_optimal_against_brute_force(KnapsackProblem(util, {"bops": cost}, {"bops": budget},
                                                       pairs=pairs))


@pytest.mark.skipif(os.name != "posix", reason="needs the C library's printf")
def test_native_prints_inside_the_solver_block_are_dropped_and_stdout_comes_back(
        capfd: pytest.CaptureFixture[str]) -> None:
    libc = ctypes.CDLL(None)
    print("before the solve", flush=True)
    with native_stdout_silenced():
        libc.printf(b"HighsMipSolverData noise\n")  # buffered by C stdio, like HiGHS's
        os.write(1, b"descriptor noise\n")
        choice = solve(KnapsackProblem([np.array([0.0, 1.0])], {"bops": [np.array([1.0, 2.0])]},
                                       {"bops": 2.0}))
    print("after the solve", flush=True)
    libc.printf(b"native after\n")
    libc.fflush(None)
    out = capfd.readouterr().out
    assert choice == [1]
    assert "noise" not in out
    assert out.index("before the solve") < out.index("after the solve") < out.index("native after")

