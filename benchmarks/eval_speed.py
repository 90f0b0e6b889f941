"""Policy-evaluation time against plain FP32 inference, in one run, on two real models.

For each model: FP32 inference of the evaluation set on one ONNX Runtime session (best of
several passes), then, each timed end to end (evaluation graphs, sessions, inference):

- ``fresh``: random mixed policies from the ``flexible`` profile (2-8 bits), each unrelated
  to the one before, so prefix reuse rarely applies (median time), on the segmented
  evaluator and on one whole-model graph per policy (``max_segments=1``, the previous
  engine, whose cost does not depend on the sequence);
- ``search``: whole Owen samples of the default search (coalitions and their one-unit
  neighbours, the sequence a search really asks for), mean time per real evaluation on a
  fresh segmented evaluator.

Weights are fake-quantized once per (layer, bits) before timing (that is calibration work,
reported separately). Ratios to FP32 inference are the figures of merit; goal <= 1.10.
Also checks MobileNetV2 W8A8 agreement with FP32 on held-out natural images (goal >= 0.90) and
its top-1 on the 20 labeled ImageNet images as a sanity line.

    python benchmarks/eval_speed.py [--policies 20] [--out benchmarks/results/eval_speed.json]
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

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))

from harness import assets
from harness.common import Bench, bundled_example, mobilenet_v2, random_policies

from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.runtime import RuntimeConfig, describe_provider
from smpq_onnx.quant.options import Option
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.shapley import owen_shapley
from smpq_onnx.strategy.space import SearchSpace


def search_sequence_time(evaluator: Evaluator, space: SearchSpace, samples: int) -> float:
    """Mean seconds per real evaluation over ``samples`` whole Owen samples."""
    game = QuantizationGame(space)
    start, before = time.perf_counter(), evaluator.n_evaluations
    owen_shapley(len(game.players), lambda present: evaluator.evaluate(
        game.realize(present)).score, samples=samples, rng=np.random.default_rng(0))
    return (time.perf_counter() - start) / max(evaluator.n_evaluations - before, 1)


def time_model(bench: Bench, space: SearchSpace, count: int, owen_samples: int) -> dict:
    name, evaluator, setup_s = bench.name, bench.evaluator, bench.setup_s
    fp32_session = evaluator.runtime.session(evaluator._base_bytes)
    evaluator._run(fp32_session)  # warm up
    fp32_times = []
    for _ in range(5):
        start = time.perf_counter()
        evaluator._run(fp32_session)
        fp32_times.append(time.perf_counter() - start)
    fp32 = min(fp32_times)

    policies = random_policies(space, count, seed=0)
    start = time.perf_counter()
    bits = sorted({o.w_bits for p in policies for o in p.values()})
    for layer in space.layers:
        for b in bits:
            evaluator.calibration.weight(layer, b)
    weight_cache_s = time.perf_counter() - start

    whole = Evaluator(bench.model, evaluator.calibration, evaluator.data, evaluator.metric,
                      runtime=evaluator.runtime, max_segments=1)
    policy_times, whole_times = [], []
    for policy in policies:
        policy_times.append(evaluator.evaluate(policy).seconds)
        whole_times.append(whole.evaluate(policy).seconds)
    median, whole_median = statistics.median(policy_times), statistics.median(whole_times)
    fresh = Evaluator(bench.model, evaluator.calibration, evaluator.data, evaluator.metric,
                      runtime=evaluator.runtime)
    search = search_sequence_time(fresh, space, owen_samples)
    record = {
        "model": name, "layers": len(space.layers), "eval_samples": len(evaluator.data),
        "batch_size": evaluator.batch_size, "fp32_inference_s": fp32,
        "policy_eval_s_median": median, "policy_eval_s_mean": statistics.fmean(policy_times),
        "policies": len(policies), "ratio_median": median / fp32,
        "ratio_mean": statistics.fmean(policy_times) / fp32,
        "calibration_setup_s": setup_s, "weight_cache_s": weight_cache_s,
        "segments": len(evaluator.plan), "whole_graph_eval_s_median": whole_median,
        "ratio_median_whole_graph": whole_median / fp32,
        "search_owen_samples": owen_samples, "search_evaluations": fresh.n_evaluations,
        "search_eval_s_mean": search, "search_ratio": search / fp32,
    }
    print(f"{name}: FP32 {fp32 * 1e3:.1f} ms; fresh policies (median of {len(policies)}): "
          f"segmented {median / fp32:.2f}x, whole graph {whole_median / fp32:.2f}x; search "
          f"sequence ({fresh.n_evaluations} evaluations): {search / fp32:.2f}x "
          f"({len(evaluator.plan)} segments)")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--owen-samples", type=int, default=1)
    parser.add_argument("--models", default="example,mobilenet_v2",
                        help="comma-separated: example, mobilenet_v2")
    parser.add_argument("--mobilenet-eval", type=int, default=256)
    parser.add_argument("--mobilenet-calib", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" /
                        "eval_speed.json")
    args = parser.parse_args()
    assets.ensure_packages()
    runtime = RuntimeConfig()
    flexible = load_profile("flexible")
    results = []

    models = set(args.models.split(","))
    if "example" in models:
        example = bundled_example(runtime)
        results.append(time_model(example, SearchSpace.build(example.model, flexible),
                                  args.policies, args.owen_samples))
    if "mobilenet_v2" not in models:
        _write(args.out, runtime, results)
        return

    mobile = mobilenet_v2(runtime, n_eval=args.mobilenet_eval, n_calib=args.mobilenet_calib)
    space = SearchSpace.build(mobile.model, flexible)
    record = time_model(mobile, space, max(args.policies // 2, 5),
                        args.owen_samples)
    evaluator = mobile.evaluator
    w8a8 = space.uniform(Option(8, 8))
    record["w8a8_agreement"] = evaluator.evaluate(w8a8).score
    labeled_x, labeled_y = assets.labeled_imagenet()
    input_name = mobile.model.ir_model.graph.inputs[0].name or "input"
    labeled = Dataset({input_name: labeled_x}, labeled_y, "20 labeled ImageNet images")
    sanity = Evaluator(mobile.model, evaluator.calibration, labeled, BUILTIN_METRICS["top1"],
                       runtime=runtime)
    record["labeled20_top1_fp32"] = sanity.fp32_score
    record["labeled20_top1_w8a8"] = sanity.evaluate(w8a8).score
    print(f"mobilenet_v2: W8A8 agreement {record['w8a8_agreement']:.4f}; 20 labeled images "
          f"top-1 FP32 {record['labeled20_top1_fp32']:.2f}, W8A8 "
          f"{record['labeled20_top1_w8a8']:.2f}")
    results.append(record)

    _write(args.out, runtime, results)


def _write(out: Path, runtime: RuntimeConfig, results: list[dict]) -> None:
    report = {
        "benchmark": "policy evaluation time vs FP32 inference",
        "goal_ratio": 1.10, "provider": describe_provider(runtime),
        "onnxruntime": ort.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_load_1min": os.getloadavg()[0],
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
