"""compare.py's verdict sentence on a hand-made results table: the reference is not a baseline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from harness.report import verdict


def results(scores: dict[str, list[float]]) -> dict[str, Any]:
    rows = [{"model": "m", "profile": "p", "budget": "b", "method": method, "seed": seed,
             "status": "ok", "heldout": score, "evaluations": 100 if method != "evolution"
             else 1000}
            for method, values in scores.items() for seed, score in enumerate(values)]
    return {"models": {"m": {"percent": True, "metric": "top1", "sizes": {"heldout": 10000}}},
            "arenas": {"m/p": {"fp32": {"heldout": 0.9}}}, "results": rows}


def test_the_reference_is_compared_to_not_beaten() -> None:
    data = results({"shapley": [0.90, 0.90], "amp": [0.88], "evolution": [0.95]})
    text = verdict(data, "m", "p", "b")
    assert "vs best baseline amp 88.00" in text
    assert "shapley wins by 2.00 pt" in text
    assert "ranks 1 of 2 methods" in text
    assert "evolution (1000 evaluations) 95.00: shapley is 5.00 pt below it" in text


def test_within_the_reference_gap() -> None:
    data = results({"shapley": [0.900], "random": [0.905, 0.895], "evolution": [0.9015]})
    text = verdict(data, "m", "p", "b")
    assert "shapley ties" in text
    assert "within 0.2 pt of it" in text


def test_above_the_reference() -> None:
    data = results({"shapley": [0.90], "amp": [0.88], "evolution": [0.89]})
    assert "shapley is 1.00 pt above it" in verdict(data, "m", "p", "b")
