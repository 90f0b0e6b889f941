"""compare.py's paired comparison of two methods on the same held-out samples, by hand."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from harness.core import Arena, paired_differences, sample_hits
from harness.report import verdict

from smpq_onnx.engine.metrics import BUILTIN_METRICS


def arena(hits: dict[tuple[str, str, int | None], list[int]]) -> Arena:
    return cast(Arena, SimpleNamespace(
        budgets={"b": None, "other": None},
        heldout_hits={key: np.array(values, dtype=bool) for key, values in hits.items()}))


def test_seeds_are_averaged_per_sample_before_the_difference() -> None:
    found = paired_differences(arena({
        ("b", "shapley", 0): [1, 1, 0, 1], ("b", "shapley", 1): [1, 1, 0, 0],
        ("b", "amp", None): [1, 0, 0, 1]}))
    # per sample: shapley 1, 1, 0, 0.5 - amp 1, 0, 0, 1 = 0, 1, 0, -0.5
    diff = np.array([0.0, 1.0, 0.0, -0.5])
    assert found == {"b": {"amp": {"difference": pytest.approx(0.125),
                                   "se": pytest.approx(diff.std(ddof=1) / 2)}}}


def test_budgets_without_the_method_are_left_out() -> None:
    assert paired_differences(arena({("other", "amp", None): [1, 0]})) == {}


def test_hits_follow_the_metric() -> None:
    outputs = np.array([[0.0, 2.0], [3.0, 1.0], [0.0, 1.0]])
    reference = np.array([[0.0, 2.0], [0.0, 1.0], [5.0, 1.0]])
    labels = np.array([1, 0, 0])

    def evaluator(metric: str) -> Any:
        return SimpleNamespace(metric=BUILTIN_METRICS[metric], reference=reference,
                               data=SimpleNamespace(labels=labels))

    assert np.array_equal(sample_hits(evaluator("top1"), outputs), [True, True, False])
    assert np.array_equal(sample_hits(evaluator("agreement"), outputs), [True, False, False])
    assert sample_hits(evaluator("kl"), outputs) is None


def results(paired_se: float) -> dict[str, Any]:
    rows = [{"model": "m", "profile": "p", "budget": "b", "method": method, "seed": seed,
             "status": "ok", "heldout": heldout, "heldout_utility": utility,
             "evaluations": 100}
            for method, seed, heldout, utility in (("shapley", 0, 0.900, -0.010),
                                                   ("shapley", 1, 0.900, -0.012),
                                                   ("amp", None, 0.903, -0.013))]
    paired = {"b": {"amp": {"difference": -0.003, "se": paired_se}}}
    return {"models": {"m": {"percent": True, "metric": "top1", "sizes": {"heldout": 10000}}},
            "arenas": {"m/p": {"fp32": {"heldout": 0.9}, "paired": paired}}, "results": rows}


def test_the_paired_standard_error_decides_the_noise() -> None:
    tight = verdict(results(paired_se=0.001), "m", "p", "b")
    assert "shapley loses by 0.30 pt, beyond noise" in tight
    assert "2 paired s.e. of the difference on the same 10000 held-out samples 0.20 pt" in tight
    loose = verdict(results(paired_se=0.002), "m", "p", "b")
    assert "shapley loses by 0.30 pt, within noise" in loose


def test_the_verdict_reports_the_search_utility_on_held_out_samples() -> None:
    text = verdict(results(paired_se=0.001), "m", "p", "b")
    assert ("(-KL to FP32 x1000) shapley -11.00 is ahead of the best baseline amp -13.00"
            in text)
    data = results(paired_se=0.001)
    for row in data["results"]:
        row["heldout_utility"] = -0.01
    assert "shapley -10.00 ties the best baseline amp -10.00" in verdict(data, "m", "p", "b")
