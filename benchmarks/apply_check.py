"""Do emitted QDQ models reproduce what the evaluator reports? Uniform and random policies.

For the bundled Fashion-MNIST ResNet and MobileNetV2 (ImageNet weights), per ORT optimization
level (basic, all): emit each policy, run onnx.checker, save it, load the file in a fresh ONNX
Runtime session with default options but that level, and compare its metric with

- ``deployed``: the evaluator's run of the emitted model (``Evaluator.evaluate_deployed``),
  the figure ``search`` reports as final and ``apply`` checks against. Issue 4's criterion:
  within 0.1 pt of the task metric, or within 1e-3 relative on a fidelity metric (output SQNR
  against FP32, in dB);
- ``fast``: the fake-quant engine the search's Shapley values come from. At ``all`` ORT runs
  the QDQ model with integer kernels (QLinearConv) and other fusions, so the two can differ;
  the gap is recorded, not required to vanish.

    python benchmarks/apply_check.py [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))

from harness.common import Bench, bundled_example, mobilenet_v2, random_policies

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.export.emit import emit_qdq_model, save_model_atomic
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.options import Option
from smpq_onnx.strategy.space import SearchSpace

LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def fresh_session_outputs(path: Path, level: str, evaluator: Evaluator) -> np.ndarray:
    options = ort.SessionOptions()  # what a user writes: defaults but the level
    options.graph_optimization_level = LEVELS[level]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, batch)[0]
                           for batch in evaluator.data.batches(evaluator.batch_size)])


def at_level(bench: Bench, level: str) -> Evaluator:
    """The bench's evaluator (same calibration and data) at ORT optimization ``level``."""
    base = bench.evaluator
    return Evaluator(bench.model, base.calibration, base.data, base.metric,
                     runtime=dataclasses.replace(base.runtime, optimization=level))


def check(bench: Bench, profile: str, uniform: list[str], n_random: int) -> list[dict]:
    space = SearchSpace.build(bench.model, load_profile(profile))
    evaluators = {level: at_level(bench, level) for level in LEVELS}
    policies = [(name, space.uniform(Option.parse(name))) for name in uniform]
    policies += [(f"random{i}", p) for i, p in enumerate(random_policies(space, n_random, 1))]
    sqnr = BUILTIN_METRICS["sqnr"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, policy in policies:
            path = Path(tmp) / "model.qdq.onnx"
            save_model_atomic(emit_qdq_model(bench.model, policy, bench.evaluator.calibration,
                                             profile=profile), path)
            onnx.checker.check_model(str(path))
            row: dict[str, Any] = {"model": bench.name, "policy": label,
                                   "bytes": path.stat().st_size}
            for level, evaluator in evaluators.items():
                emitted = fresh_session_outputs(path, level, evaluator)
                deployed = evaluator.run_model(evaluator.deployed_model(policy)
                                               .SerializeToString())
                fast = evaluator.outputs(policy)
                for name, outputs in (("emitted", emitted), ("deployed", deployed),
                                      ("fast", fast)):
                    row[f"{name}_{level}"] = evaluator.score_outputs(outputs)
                    row[f"{name}_{level}_sqnr_db"] = sqnr(outputs, evaluator.reference, None)
                row[f"max_abs_logit_diff_emitted_deployed_{level}"] = float(
                    np.max(np.abs(emitted - deployed)))
            row["max_abs_diff"] = max(abs(row[f"emitted_{k}"] - row[f"deployed_{k}"])
                                      for k in LEVELS)
            row["within_0.1pt"] = row["max_abs_diff"] <= 0.001
            row["max_sqnr_rel_diff"] = max(
                abs(row[f"emitted_{k}_sqnr_db"] - row[f"deployed_{k}_sqnr_db"])
                / abs(row[f"deployed_{k}_sqnr_db"]) for k in LEVELS)
            row["fidelity_within_1e-3"] = row["max_sqnr_rel_diff"] <= 1e-3
            row["reproduced"] = row["within_0.1pt"] or row["fidelity_within_1e-3"]
            row["fast_gap_max_abs"] = max(abs(row[f"fast_{k}"] - row[f"emitted_{k}"])
                                          for k in LEVELS)
            print(f"{bench.name:34s} {label:8s} emitted basic {row['emitted_basic']:.4f} "
                  f"all {row['emitted_all']:.4f} | deployed basic {row['deployed_basic']:.4f} "
                  f"all {row['deployed_all']:.4f} | fast basic {row['fast_basic']:.4f} all "
                  f"{row['fast_all']:.4f} | SQNR rel diff {row['max_sqnr_rel_diff']:.1e}")
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "apply_check.json")
    args = parser.parse_args()
    runtime = RuntimeConfig()
    rows = check(bundled_example(runtime), "flexible", ["W8A8", "W4A8", "W4A4", "W2A2"], 3)
    rows += check(mobilenet_v2(runtime, n_eval=128, n_calib=64), "flexible",
                  ["W8A8", "W4A8", "W6A6"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"all_within_0.1pt": all(r["within_0.1pt"] for r in rows),
               "all_reproduced": all(r["reproduced"] for r in rows),
               "max_fast_gap": max(r["fast_gap_max_abs"] for r in rows)}
    args.out.write_text(json.dumps({"rows": rows, **summary}, indent=2) + "\n")
    print(f"{summary}; wrote {args.out}")


if __name__ == "__main__":
    main()
