"""Weight rounding: held-out accuracy of uniform policies per rounding method; stage cost.

    python benchmarks/rounding.py                      # both models, every method
    python benchmarks/rounding.py --models fashion_resnet --methods nearest,gptq+bc

For each model (the bundled Fashion-MNIST ResNet and the depthwise-separable net of
``examples/train_fashion_dsnet.py``: top-1 on the 10k test set; MobileNetV2 with
ImageNet weights: agreement and KL with FP32 on held-out natural crops, top-1 on the 20 labeled
ImageNet photos) and each rounding method (``nearest``, ``gptq``, ``adaround``, each with
``+bc`` = bias correction and ``+ss`` = scale search), the rounding stage runs once for every
layer and every weight bit-width 2-8 of the ``flexible`` profile, in a fresh process (its wall
time and peak RSS are the stage's own), on the calibration split; then uniform W8A8, W6A8,
W5A8, W4A8, W3A8, W4A4, W3A4 and W2A8 are evaluated with the fake-quant engine on the
held-out split (the same calibration). Writes ``benchmarks/results/rounding.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from harness import assets
from harness.core import data_histograms
from harness.data import ModelData, fashion_dsnet, fashion_resnet, mobilenet_v2

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.calibration import Calibration, CalibrationSettings
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.weight_rounding import (
    MOMENTS_BATCH,
    RoundedTable,
    RoundingSettings,
    cached_rounding,
)
from smpq_onnx.strategy.space import SearchSpace

POLICIES = ("W8A8", "W6A8", "W5A8", "W4A8", "W3A8", "W4A4", "W3A4", "W2A8")
METHODS = ("nearest", "nearest+bc", "gptq", "gptq+bc", "adaround", "adaround+bc")
RESULTS = Path(__file__).parent / "results" / "rounding.json"
DEFAULT_LABEL = "gptq+bc"  # smpq_onnx.api.context.DEFAULT_ROUNDING


def parse_settings(label: str, samples: int) -> RoundingSettings:
    """``method[+bc][+ss]``: bias correction, scale search."""
    method, *flags = label.split("+")
    return RoundingSettings(method=method, bias_correction="bc" in flags,
                            scale_search="ss" in flags, samples=samples)


def _stage(model_path: str, calib_path: str, label: str, samples: int, cache: str,
           queue: Any) -> None:
    """Child process: the rounding stage alone, so its time and peak RSS are its own."""
    os.environ["SMPQ_CACHE_DIR"] = cache
    model = import_model(model_path)
    with np.load(calib_path) as data:
        inputs = {k: data[k] for k in data.files}
    space = SearchSpace.build(model, load_profile("flexible"))
    bits = {name: sorted({o.w_bits for o in options}) for name, options in space.options.items()}
    calibration = Calibration(model, {}, CalibrationSettings())
    settings = parse_settings(label, samples)
    before = _memory_mib("VmRSS")
    start = time.perf_counter()
    table, cached = benchmark_rounding(model, calibration, bits, inputs, settings,
                                       RuntimeConfig())
    queue.put({"seconds": time.perf_counter() - start, "cached": cached,
               "entries": len(table), "samples": min(samples, len(next(iter(inputs.values())))),
               "rss_before_mib": before, "peak_rss_mib": _memory_mib("VmHWM")})


def benchmark_rounding(model: Any, calibration: Calibration, bits: dict[str, list[int]],
                       inputs: dict[str, np.ndarray], settings: RoundingSettings,
                       runtime: RuntimeConfig) -> tuple[RoundedTable, bool]:
    """The stage on the first ``settings.samples`` samples (inputs batched on axis 0), keyed
    alike in the child that times it and the parent that reads its table."""
    n = min(settings.samples, len(next(iter(inputs.values()))))
    used = {name: array[:n] for name, array in inputs.items()}
    return cached_rounding(
        model, bits, [used[k] for k in sorted(used)],
        lambda: ({k: v[i:i + MOMENTS_BATCH] for k, v in used.items()}
                 for i in range(0, n, MOMENTS_BATCH)),
        n, weight=calibration.weight_array, scales=calibration.weight_scales,
        settings=settings, calibration_settings="benchmark", runtime=runtime)


def _memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc (reset at exec, unlike
    ru_maxrss, which a spawned child inherits from its parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_stage(model_path: Path, calib_path: Path, label: str, samples: int,
              cache: Path) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_stage, args=(str(model_path), str(calib_path), label,
                                                   samples, str(cache), queue))
    process.start()
    result = queue.get()
    process.join()
    return dict(result)


def evaluators(data: ModelData, calibration: Calibration,
               runtime: RuntimeConfig) -> dict[str, Evaluator]:
    if data.key.startswith("fashion"):
        return {"top1": Evaluator(data.model, calibration, data.heldout, data.metric,
                                  runtime=runtime)}
    found = {"agreement": Evaluator(data.model, calibration, data.heldout,
                                    BUILTIN_METRICS["agreement"], runtime=runtime),
             "kl": Evaluator(data.model, calibration, data.heldout, BUILTIN_METRICS["kl"],
                             runtime=runtime)}
    if data.sanity is not None:
        found["top1_labeled"] = Evaluator(data.model, calibration, data.sanity,
                                          BUILTIN_METRICS["top1"], runtime=runtime)
    return found


def load(key: str, args: argparse.Namespace) -> ModelData:
    if key == "fashion_resnet":
        return fashion_resnet(n_search=16, n_calib=args.calib, n_test=10000)
    if key == "fashion_dsnet":
        return fashion_dsnet(n_search=16, n_calib=args.calib, n_test=10000)
    return mobilenet_v2(n_search=8, n_heldout=args.heldout, n_calib=args.calib)


def markdown_tables(results: dict[str, Any]) -> str:
    """One table per (model, metric): rounding method x uniform policy, with the stage time."""
    lines: list[str] = []
    policies = results["policies"]
    for key, entry in results["models"].items():
        methods = entry["methods"]
        for metric in next(iter(methods.values()))["scores"]["FP32"]:
            kl = metric == "kl"  # stored as -KL (higher is better); shown as KL

            def shown(value: float, kl: bool = kl) -> str:
                return f"{-value:.3f}" if kl else f"{100 * value:.2f}"

            fp32 = next(iter(methods.values()))["scores"]["FP32"][metric]
            lines += ["", f"{key}, {'KL to FP32 (lower is better)' if kl else metric + ' %'} "
                      f"(FP32 {shown(fp32)}):", "",
                      "| rounding | stage s | " + " | ".join(policies) + " |",
                      "|---|---|" + "---|" * len(policies)]
            for label, run in methods.items():
                cells = [shown(run["scores"][b][metric]) for b in policies]
                lines.append(f"| {label} | {run['stage']['seconds']:.1f} | "
                             + " | ".join(cells) + " |")
        timing = entry.get("stage_timing")
        if timing:
            lines += ["", f"{key} stage alone ({timing['method']}, {timing['samples']} "
                      f"calibration samples, {timing['entries']} (layer, bits) entries): "
                      f"{timing['seconds']:.1f} s, peak RSS {timing['peak_rss_mib']:.0f} MiB "
                      f"(+{timing['peak_rss_mib'] - timing['rss_before_mib']:.0f} MiB over the "
                      "process before the stage)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", default="fashion_resnet,fashion_dsnet,mobilenet_v2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--calib", type=int, default=256, help="calibration samples (both models)")
    p.add_argument("--heldout", type=int, default=400, help="MobileNetV2 held-out crops")
    p.add_argument("--timing-samples", type=int, default=0,
                   help="also time the default rounding stage on this many crops of all "
                   "photos (MobileNetV2; timing and memory only, no accuracy)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true",
                   help="print the Markdown tables of --out's JSON (as in the README), run nothing")
    args = p.parse_args(argv)
    if args.table:
        print(markdown_tables(json.loads(args.out.read_text())))
        return
    assets.ensure_packages()
    assets.ensure_fashion_mnist()
    runtime = RuntimeConfig()
    results: dict[str, Any] = {
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "onnxruntime": ort.__version__, "numpy": np.__version__,
                        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]},
        "policies": list(POLICIES), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for key in [m for m in args.models.split(",") if m]:
            data = load(key, args)
            model_path = Path(tmp) / f"{key}.onnx"
            onnx.save(ir.to_proto(data.model.ir_model), str(model_path))
            calib_path = Path(tmp) / f"{key}_calib.npz"
            np.savez(calib_path, **data.calib.inputs)
            histograms = data_histograms(data, runtime)
            entry: dict[str, Any] = {"splits": data.splits, "calibration_samples": args.calib,
                                     "methods": {}}
            results["models"][key] = entry
            if args.timing_samples and key == "mobilenet_v2":
                timing_path = Path(tmp) / "timing_calib.npz"
                name = next(iter(data.calib.inputs))
                np.savez(timing_path, **{name: assets.natural_images(args.timing_samples,
                                                                      seed=4)})
                entry["stage_timing"] = {"method": DEFAULT_LABEL, **run_stage(
                    model_path, timing_path, DEFAULT_LABEL, args.timing_samples,
                    Path(tmp) / "timing")}
                print(f"{key} stage timing: {entry['stage_timing']}", flush=True)
            for label in [m for m in args.methods.split(",") if m]:
                settings = parse_settings(label, args.calib)
                stage = ({"seconds": 0.0, "entries": 0} if settings.is_identity else
                         run_stage(model_path, calib_path, label, args.calib, Path(tmp)))
                calibration = Calibration(data.model, histograms, CalibrationSettings())
                if not settings.is_identity:
                    space = SearchSpace.build(data.model, load_profile("flexible"))
                    bits = {n: sorted({o.w_bits for o in opts})
                            for n, opts in space.options.items()}
                    os.environ["SMPQ_CACHE_DIR"] = tmp
                    table, cached = benchmark_rounding(data.model, calibration, bits,
                                                       data.calib.inputs, settings, runtime)
                    assert cached, "the parent must read the child's table"
                    calibration.use_rounded_weights(table)
                scores: dict[str, dict[str, float]] = {}
                evals = evaluators(data, calibration, runtime)
                space = SearchSpace.build(data.model, load_profile("flexible"))
                for bits_text in POLICIES:
                    policy = space.uniform(Option.parse(bits_text))
                    scores[bits_text] = {name: ev.evaluate(policy).score
                                         for name, ev in evals.items()}
                scores["FP32"] = {name: ev.fp32_score for name, ev in evals.items()}
                entry["methods"][label] = {"stage": stage, "scores": scores}
                print(f"{key} {label}: stage {stage['seconds']:.1f} s; "
                      + ", ".join(f"{b} {next(iter(s.values())):.4f}"
                                  for b, s in scores.items()), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=2))
    results["finished"] = True
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
