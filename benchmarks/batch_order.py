"""Time of a batch of unrelated policies in the order drawn vs in prefix order, in one run.

A random search, an evolution generation or AMP's first phase hands the evaluator a batch of
policies whose order does not matter. ``Evaluator.evaluate_many`` runs them sorted segment by
segment, so that policies which share leading segments follow each other and start from the
cached boundary activations. Per model, alternating arms on fresh evaluators (cold caches,
the same policies): ``drawn`` evaluates them one by one as drawn, ``prefix`` as one batch.
Scores must be identical; the figure of merit is the ``prefix / drawn`` time ratio.

    python benchmarks/batch_order.py [--policies 150] [--out benchmarks/results/batch_order.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import assets
from harness.common import Bench, bundled_example, mobilenet_v2, random_policies

from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.space import SearchSpace


def timed(bench: Bench, policies: list[Policy], batched: bool) -> tuple[float, list[float]]:
    evaluator = bench.evaluator.worker_spec().build()  # cold caches
    start = time.perf_counter()
    scores = (evaluator.scores(policies) if batched
              else [evaluator.evaluate(p).score for p in policies])
    return time.perf_counter() - start, scores


def measure(bench: Bench, count: int, repeats: int) -> dict:
    space = SearchSpace.build(bench.model, load_profile("flexible"))
    policies = random_policies(space, count, seed=0)
    drawn, prefix = [], []
    for _ in range(repeats):
        seconds, expected = timed(bench, policies, batched=False)
        drawn.append(seconds)
        seconds, scores = timed(bench, policies, batched=True)
        prefix.append(seconds)
        if scores != expected:
            raise SystemExit(f"{bench.name}: prefix order changed a score")
    record = {"model": bench.name, "policies": count, "repeats": repeats,
              "drawn_s": drawn, "prefix_s": prefix,
              "ratio": statistics.median(prefix) / statistics.median(drawn),
              "segments": len(bench.evaluator.plan.segments), "scores_identical": True}
    print(f"{bench.name}: {count} policies, drawn {statistics.median(drawn):.1f} s, prefix "
          f"{statistics.median(prefix):.1f} s, ratio {record['ratio']:.3f} "
          f"({record['segments']} segments)")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "batch_order.json")
    args = parser.parse_args()
    assets.ensure_packages()
    runtime = RuntimeConfig()
    results = [measure(bundled_example(runtime), args.policies, args.repeats),
               measure(mobilenet_v2(runtime, n_eval=64, n_calib=64),
                       max(args.policies // 4, 5), args.repeats)]
    report = {"benchmark": "batch in drawn order vs prefix order", "results": results,
              "python": platform.python_version(), "cpu_load_1min": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
