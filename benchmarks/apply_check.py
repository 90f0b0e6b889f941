"""Do emitted QDQ models reproduce the evaluator? Uniform and random mixed policies, two models.

For the bundled Fashion-MNIST ResNet and MobileNetV2 (ImageNet weights): emit each policy,
run onnx.checker, load the file in a fresh ONNX Runtime session at the default (basic) and
full (all) optimization levels, and compare its metric with the evaluator's.

    python benchmarks/apply_check.py [--out benchmarks/results/apply_check.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))

from common import Bench, bundled_example, mobilenet_v2, random_policies

from smpq_onnx.emit import emit_qdq_model, save_model_atomic
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
            row = {"model": bench.name, "policy": label, "evaluator": expected,
                   "bytes": path.stat().st_size}
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
            row["max_abs_diff"] = max(abs(row[f"emitted_{k}"] - expected) for k in LEVELS)
            row["within_0.1pt"] = row["max_abs_diff"] <= 0.001
            print(f"{bench.name:34s} {label:8s} evaluator {expected:.4f} emitted basic "
                  f"{row['emitted_basic']:.4f} all {row['emitted_all']:.4f}")
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
    args.out.write_text(json.dumps({"rows": rows, "all_within_0.1pt":
                                    all(r["within_0.1pt"] for r in rows)}, indent=2) + "\n")
    print(f"all within 0.1 pt: {all(r['within_0.1pt'] for r in rows)}; wrote {args.out}")


if __name__ == "__main__":
    main()
