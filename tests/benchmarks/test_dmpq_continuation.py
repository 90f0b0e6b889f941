"""The benchmark's DMPQ runs continue a looser budget's cd doubling: same outcome as from
the start, on a stand-in whose argmax policy's BOPs fall as cd grows."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from harness.methods import _continued_doubling

from smpq_onnx.hardware.budget import Budget


@dataclass(frozen=True)
class Settings:
    cd: float = 0.01
    cd_growth: float = 2.0
    retries: int = 6


def doubling(settings: Settings, budget: Budget) -> SimpleNamespace:
    """dmpq_search's attempt loop, with the argmax policy's BOPs 1000 / (1 + 100 cd)."""
    cd = settings.cd
    for attempt in range(settings.retries + 1):
        if attempt:
            cd *= settings.cd_growth
        if 1000 / (1 + 100 * cd) <= bops_of(budget):
            return SimpleNamespace(details={"cd": cd, "attempts": attempt + 1,
                                            "selection": "argmax"})
    return SimpleNamespace(details={"cd": cd, "attempts": settings.retries + 1,
                                    "selection": "knapsack"})


def bops_of(budget: Budget) -> int:
    assert budget.bops is not None
    return budget.bops


def argmax_bops(result: SimpleNamespace) -> float:
    return 1000 / (1 + 100 * result.details["cd"])


@pytest.mark.parametrize("bops", [[600, 590, 300, 120], [900, 200, 20, 10], [400, 30, 15]])
def test_continuing_from_a_looser_budget_ends_where_starting_over_does(bops: list[int]) -> None:
    budgets = {f"b{b}": Budget(bops=b) for b in bops}
    arena = SimpleNamespace(budgets=budgets)
    done: list[tuple[str, Any, int, float]] = []
    attempts: dict[str, int] = {}
    for key, budget in budgets.items():  # loosest first, as run_dmpq orders them
        scratch = doubling(Settings(), budget)
        if any(d[1].details["selection"] == "argmax" and argmax_bops(d[1]) <= bops_of(budget)
               for d in done):
            continue  # run_dmpq reuses that training
        resumed, before, _ = _continued_doubling(Settings(), budget, arena, done, attempts)
        result = doubling(resumed, budget)
        assert result.details["cd"] == pytest.approx(scratch.details["cd"], rel=1e-12)
        assert result.details["selection"] == scratch.details["selection"]
        attempts[key] = before + result.details["attempts"]
        assert attempts[key] == scratch.details["attempts"]
        if done:  # something was skipped, except where no attempt was left to skip to
            assert result.details["attempts"] < scratch.details["attempts"] or (
                scratch.details["selection"] == "knapsack")
        done.append((key, result, 0, 0.0))
