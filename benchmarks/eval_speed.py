"""Policy-evaluation time against plain FP32 inference, in one run, on two real models.

For each model: FP32 inference of the evaluation set on one ONNX Runtime session (best of
several passes), then evaluations of random mixed policies from the ``flexible`` profile
(2-8 bits), each timed end to end: evaluation graph, session creation and inference. Weights
are fake-quantized once per (layer, bits) before timing (that is calibration work, reported
separately). The ratio (median policy time / FP32 time) is the figure of merit; goal <= 1.10.
Also checks MobileNetV2 W8A8 agreement with FP32 on held-out natural images (goal >= 0.90) and
its top-1 on the 20 labeled ImageNet images as a sanity line.

    python benchmarks/eval_speed.py [--policies 20] [--out benchmarks/results/eval_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))

import assets

from smpq_onnx.calibration import Calibration, CalibrationSettings, collect_histograms
from smpq_onnx.dataset import Dataset, InputSpec, load_dataset, split_calibration
from smpq_onnx.evaluator import Evaluator
from smpq_onnx.example import example_data_path, example_model_path
from smpq_onnx.importer import ImportedModel, import_model
from smpq_onnx.metrics import BUILTIN_METRICS, Metric
from smpq_onnx.options import Option
from smpq_onnx.policy import Policy
from smpq_onnx.profile import load_profile
from smpq_onnx.runtime import RuntimeConfig, describe_provider
from smpq_onnx.space import SearchSpace


def build_evaluator(model: ImportedModel, calib: Dataset, evaluation: Dataset, metric: Metric,
                    runtime: RuntimeConfig) -> tuple[Evaluator, float]:
    start = time.perf_counter()
    hist = collect_histograms(model, calib.batches(64), [la.activation for la in model.layers],
                              runtime=runtime)
    calibration = Calibration(model, hist, CalibrationSettings())
    evaluator = Evaluator(model, calibration, evaluation, metric, runtime=runtime)
    return evaluator, time.perf_counter() - start


def random_policies(space: SearchSpace, count: int, seed: int) -> list[Policy]:
    rng = np.random.default_rng(seed)
    quantized = [o for o in space.options[space.layers[0].name] if not o.is_float]
    return [Policy({layer.name: quantized[rng.integers(len(quantized))]
                    for layer in space.layers}) for _ in range(count)]


def time_model(name: str, evaluator: Evaluator, space: SearchSpace, count: int,
               setup_s: float) -> dict:
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

    policy_times = []
    for policy in policies:
        result = evaluator.evaluate(policy)
        policy_times.append(result.seconds)
    median = statistics.median(policy_times)
    record = {
        "model": name, "layers": len(space.layers), "eval_samples": len(evaluator.data),
        "batch_size": evaluator.batch_size, "fp32_inference_s": fp32,
        "policy_eval_s_median": median, "policy_eval_s_mean": statistics.fmean(policy_times),
        "policies": len(policies), "ratio_median": median / fp32,
        "ratio_mean": statistics.fmean(policy_times) / fp32,
        "calibration_setup_s": setup_s, "weight_cache_s": weight_cache_s,
    }
    print(f"{name}: FP32 {fp32 * 1e3:.1f} ms, policy {median * 1e3:.1f} ms (median of "
          f"{len(policies)}), ratio {median / fp32:.2f}")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--mobilenet-eval", type=int, default=256)
    parser.add_argument("--mobilenet-calib", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" /
                        "eval_speed.json")
    args = parser.parse_args()
    assets.ensure_packages()
    runtime = RuntimeConfig()
    flexible = load_profile("flexible")
    results = []

    example = import_model(example_model_path())
    calib, evaluation = split_calibration(
        load_dataset(example_data_path(), InputSpec.of_model(example.ir_model)))
    evaluator, setup = build_evaluator(example, calib, evaluation, BUILTIN_METRICS["top1"],
                                       runtime)
    results.append(time_model("fashion_resnet (bundled)", evaluator,
                              SearchSpace.build(example, flexible), args.policies, setup))

    from mobilenet_v2 import export_mobilenet_v2

    with tempfile.TemporaryDirectory() as tmp:
        mobilenet = import_model(export_mobilenet_v2(Path(tmp) / "mobilenet_v2.onnx"))
    images = assets.natural_images(args.mobilenet_eval + args.mobilenet_calib, seed=0)
    input_name = mobilenet.ir_model.graph.inputs[0].name or "input"
    natural = Dataset({input_name: images}, None, "natural images")
    calib = natural.subset(slice(args.mobilenet_eval, None), "natural calib")
    evaluation = natural.subset(slice(0, args.mobilenet_eval), "natural eval")
    evaluator, setup = build_evaluator(mobilenet, calib, evaluation,
                                       BUILTIN_METRICS["agreement"], runtime)
    space = SearchSpace.build(mobilenet, flexible)
    record = time_model("mobilenet_v2 (ImageNet weights)", evaluator, space,
                        max(args.policies // 2, 5), setup)
    w8a8 = space.uniform(Option(8, 8))
    record["w8a8_agreement"] = evaluator.evaluate(w8a8).score
    labeled_x, labeled_y = assets.labeled_imagenet()
    labeled = Dataset({input_name: labeled_x}, labeled_y, "20 labeled ImageNet images")
    sanity = Evaluator(mobilenet, evaluator.calibration, labeled, BUILTIN_METRICS["top1"],
                       runtime=runtime)
    record["labeled20_top1_fp32"] = sanity.fp32_score
    record["labeled20_top1_w8a8"] = sanity.evaluate(w8a8).score
    print(f"mobilenet_v2: W8A8 agreement {record['w8a8_agreement']:.4f}; 20 labeled images "
          f"top-1 FP32 {record['labeled20_top1_fp32']:.2f}, W8A8 "
          f"{record['labeled20_top1_w8a8']:.2f}")
    results.append(record)

    report = {
        "benchmark": "policy evaluation time vs FP32 inference",
        "goal_ratio": 1.10, "provider": describe_provider(runtime),
        "onnxruntime": ort.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
