"""Do emitted QDQ models reproduce the evaluator? Uniform and random mixed policies, two models.

For the bundled Fashion-MNIST ResNet and MobileNetV2 (ImageNet weights): emit each policy,
run onnx.checker, load the file in a fresh ONNX Runtime session at the default (basic) and
full (all) optimization levels, and compare its metric with the evaluator's. Issue 4's
criterion: within 0.1 pt of the task metric, or within 1e-3 relative on a fidelity metric
(output SQNR against FP32, in dB). Both are recorded; a row passes if either holds at both
levels. MobileNetV2's top-1 agreement on these natural images is fragile (a rounding flip
in one early activation moves a borderline image), so its rows rely on the fidelity figure.

    python benchmarks/apply_check.py [--evaluator-optimization all|basic] [--out FILE]

With ``--evaluator-optimization basic`` the evaluator runs at ORT's basic level (no NCHWc
layout, no integer QLinearConv fusion), the numerics the emitted model has at that level.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))

from common import Bench, bundled_example, mobilenet_v2, random_policies

from smpq_onnx.emit import emit_qdq_model, save_model_atomic
from smpq_onnx.metrics import BUILTIN_METRICS
from smpq_onnx.options import Option
from smpq_onnx.profile import load_profile
from smpq_onnx.runtime import RuntimeConfig
from smpq_onnx.space import SearchSpace

LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def check(bench: Bench, profile: str, uniform: list[str], n_random: int) -> list[dict]:
    space = SearchSpace.build(bench.model, load_profile(profile))
    evaluator = bench.evaluator
    policies = [(name, space.uniform(Option.parse(name))) for name in uniform]
    policies += [(f"random{i}", p) for i, p in enumerate(random_policies(space, n_random, 1))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, policy in policies:
            path = Path(tmp) / "model.qdq.onnx"
            save_model_atomic(emit_qdq_model(bench.model, policy, evaluator.calibration,
                                             profile=profile), path)
            onnx.checker.check_model(str(path))
            expected = evaluator.evaluate(policy).score
            sqnr = BUILTIN_METRICS["sqnr"]
            expected_sqnr = sqnr(evaluator.outputs(policy), evaluator.reference, None)
            row: dict[str, Any] = {"model": bench.name, "policy": label, "evaluator": expected,
                                   "evaluator_sqnr_db": expected_sqnr, "bytes": path.stat().st_size}
            for level_name, level in LEVELS.items():
                options = ort.SessionOptions()
                options.graph_optimization_level = level
                session = ort.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
                out = session.get_outputs()[0].name
                outputs = np.concatenate([session.run([out], b)[0]
                                          for b in evaluator.data.batches(64)])
                row[f"emitted_{level_name}"] = evaluator.metric(outputs, evaluator.reference,
                                                                evaluator.data.labels)
                row[f"emitted_{level_name}_sqnr_db"] = sqnr(outputs, evaluator.reference, None)
            row["max_abs_diff"] = max(abs(row[f"emitted_{k}"] - expected) for k in LEVELS)
            row["within_0.1pt"] = row["max_abs_diff"] <= 0.001
            row["max_sqnr_rel_diff"] = max(
                abs(row[f"emitted_{k}_sqnr_db"] - expected_sqnr) / abs(expected_sqnr)
                for k in LEVELS)
            row["fidelity_within_1e-3"] = row["max_sqnr_rel_diff"] <= 1e-3
            row["reproduced"] = row["within_0.1pt"] or row["fidelity_within_1e-3"]
            print(f"{bench.name:34s} {label:8s} evaluator {expected:.4f} emitted basic "
                  f"{row['emitted_basic']:.4f} all {row['emitted_all']:.4f} | SQNR "
                  f"{expected_sqnr:.3f} dB vs {row['emitted_basic_sqnr_db']:.3f} / "
                  f"{row['emitted_all_sqnr_db']:.3f} (rel {row['max_sqnr_rel_diff']:.1e})")
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluator-optimization", choices=["all", "basic"], default="all")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    suffix = "" if args.evaluator_optimization == "all" else f"_{args.evaluator_optimization}"
    args.out = args.out or Path(__file__).parent / "results" / f"apply_check{suffix}.json"
    runtime = RuntimeConfig(optimization=args.evaluator_optimization)
    rows = check(bundled_example(runtime), "flexible", ["W8A8", "W4A8", "W4A4", "W2A2"], 3)
    rows += check(mobilenet_v2(runtime, n_eval=128, n_calib=64), "flexible",
                  ["W8A8", "W4A8", "W6A6"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"all_within_0.1pt": all(r["within_0.1pt"] for r in rows),
               "all_reproduced": all(r["reproduced"] for r in rows)}
    args.out.write_text(json.dumps({"evaluator_optimization": args.evaluator_optimization,
                                    "rows": rows, **summary}, indent=2) + "\n")
    print(f"{summary}; wrote {args.out}")


if __name__ == "__main__":
    main()
