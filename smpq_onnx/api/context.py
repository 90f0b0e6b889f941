"""Everything a command needs to evaluate policies of one model on one device, built once.

model -> search space and costs (profile) -> data (evaluation + calibration split) ->
calibration (one pass) -> weight rounding (cached on disk) -> evaluator. Shared by
``eval``, ``apply`` and ``search``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smpq_onnx.engine.dataset import Dataset, InputSpec, load_dataset, split_calibration
from smpq_onnx.engine.evaluator import DEFAULT_BATCH_SIZE, Evaluator
from smpq_onnx.engine.metrics import Metric, resolve_metric
from smpq_onnx.errors import DataError
from smpq_onnx.example import example_data_path, example_model_path
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import DeviceProfile, load_profile
from smpq_onnx.model.importer import ImportedModel, import_model
from smpq_onnx.model.runtime import RuntimeConfig, describe_provider
from smpq_onnx.quant.calibration import (
    Calibration,
    CalibrationSettings,
    RangeMethod,
    collect_histograms,
)
from smpq_onnx.quant.weight_rounding import RoundingSettings, cached_rounding
from smpq_onnx.strategy.space import SearchSpace

DEFAULT_ROUNDING = RoundingSettings(method="gptq", bias_correction=True)
"""The rounding every command uses unless told otherwise, chosen by ``benchmarks/rounding.py``
(README "Weight rounding"): GPTQ + bias correction was at or above nearest on every uniform
policy of both models and costs seconds; AdaRound won only at 2-bit weights, at many times
the stage time."""

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""progress(phase, done, total)"""


@dataclass(frozen=True)
class QuantizationContext:
    model: ImportedModel
    profile: DeviceProfile
    space: SearchSpace
    costs: CostModel
    eval_data: Dataset
    calib_data: Dataset
    calibration: Calibration
    evaluator: Evaluator
    metric: Metric
    runtime: RuntimeConfig
    rounding: RoundingSettings
    rounding_s: float = 0.0
    """Seconds the rounding stage took (0 when its table came from the cache)."""
    rounding_cached: bool = False


def build_context(model_path: str | Path | None, *, hw: str, data: str | Path | None,
                  calib_data: str | Path | None = None, metric: str | None = None,
                  runtime: RuntimeConfig | None = None,
                  activation_range: RangeMethod = "auto",
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  rounding: RoundingSettings | None = None,
                  progress: Progress | None = None) -> QuantizationContext:
    """Import, load data, calibrate and set up the evaluator.

    With no model, the bundled example; with no data, the example's data (only then).
    """
    runtime = runtime or RuntimeConfig()
    rounding = rounding or DEFAULT_ROUNDING
    if model_path is None:
        model_path = example_model_path()
        data = data if data is not None else example_data_path()
    if data is None and calib_data is None:
        raise DataError("no data: give --data (a .npz, an image folder or module:function)")
    profile = load_profile(hw)
    model = import_model(model_path)
    space = SearchSpace.build(model, profile)
    specs = InputSpec.of_model(model.ir_model)
    if calib_data is None:
        assert data is not None
        calibration_set, eval_set = split_calibration(load_dataset(data, specs))
    else:
        calibration_set = load_dataset(calib_data, specs)
        eval_set = load_dataset(data, specs) if data is not None else calibration_set
    chosen_metric = resolve_metric(metric, has_labels=eval_set.labels is not None)
    logger.info("evaluating on %d samples of %s, calibrating on %d of %s, with %s",
                len(eval_set), eval_set.source, len(calibration_set), calibration_set.source,
                describe_provider(runtime))

    def calibration_progress(done: int) -> None:
        if progress is not None:
            progress("calibrate", done, len(calibration_set))

    histograms = collect_histograms(
        model, calibration_set.batches(batch_size), [layer.activation for layer in model.layers],
        runtime=runtime, progress=calibration_progress)
    settings = CalibrationSettings(
        activation_method=activation_range,
        symmetric_activations=profile.activation_quantization.symmetric,
        per_channel_weights=profile.weight_quantization.granularity == "per_channel",
        weight_rounding=rounding.label)
    calibration = Calibration(model, histograms, settings)
    cached, rounding_s = round_calibration(calibration, space, calibration_set.inputs,
                                           rounding=rounding, runtime=runtime,
                                           progress=progress)
    evaluator = Evaluator(model, calibration, eval_set, chosen_metric, runtime=runtime,
                          batch_size=batch_size, profile_name=profile.name)
    return QuantizationContext(model, profile, space, CostModel(model, profile), eval_set,
                               calibration_set, calibration, evaluator, chosen_metric, runtime,
                               rounding, rounding_s, cached)


def round_calibration(calibration: Calibration, space: SearchSpace,
                      inputs: Mapping[str, np.ndarray], *, rounding: RoundingSettings,
                      runtime: RuntimeConfig, progress: Progress | None = None
                      ) -> tuple[bool, float]:
    """Run (or read from the disk cache) the rounding stage for every weight bit-width of
    ``space`` and install its table in ``calibration``.

    Returns (whether the table came from the cache, seconds spent computing it).
    """
    if rounding.is_identity:
        return True, 0.0
    started = time.perf_counter()
    bits_per_layer = {name: sorted({o.w_bits for o in options})
                      for name, options in space.options.items()}
    table, cached = cached_rounding(
        calibration.model, bits_per_layer, inputs, weight=calibration.weight_array,
        scales=calibration.weight_scales, settings=rounding,
        calibration_settings=repr(calibration.settings), runtime=runtime, progress=progress,
        per_channel=calibration.settings.per_channel_weights)
    calibration.use_rounded_weights(table)
    return cached, 0.0 if cached else time.perf_counter() - started
