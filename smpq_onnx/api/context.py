"""Everything a command needs to evaluate policies of one model on one device, built once.

model -> search space and costs (profile) -> data (evaluation + calibration split) ->
calibration (one pass) -> weight rounding (cached on disk) -> evaluator. Shared by
``eval``, ``apply`` and ``search``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smpq_onnx.engine.activation_ranges import CHOICE_BITS, choose_high_bits_method
from smpq_onnx.engine.dataset import (
    Dataset,
    InputSpec,
    conform,
    describe_inputs,
    first_sample_shapes,
    load_dataset,
    rounded_to_float16,
    split_calibration,
)
from smpq_onnx.engine.evaluator import DEFAULT_BATCH_SIZE, Evaluator, run_batch_size
from smpq_onnx.engine.metrics import SEARCH_UTILITY, Metric, resolve_metric
from smpq_onnx.errors import DataError
from smpq_onnx.example import example_data_path, example_model_path
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import DeviceProfile, load_profile
from smpq_onnx.model.importer import ImportedModel, import_model
from smpq_onnx.model.loading import load_onnx
from smpq_onnx.model.runtime import RuntimeConfig, describe_provider
from smpq_onnx.quant.calibration import (
    Calibration,
    CalibrationSettings,
    RangeMethod,
    collect_histograms,
)
from smpq_onnx.quant.options import FLOAT_BITS
from smpq_onnx.quant.weight_rounding import (
    MOMENTS_BATCH,
    RoundingSettings,
    cached_rounding,
)
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


SEARCH_UNLABELED_METRIC = SEARCH_UTILITY
"""The metric ``search`` reports (and ``apply`` checks) on class scores without labels, its
utility too (:func:`searching_on`). Agreement on a few hundred samples
moves in whole samples, too coarse to see one layer's change: on MobileNetV2 (npu, 0.75x
W8A8 BOPs, 64 search crops) AMP's held-out agreement rose from 81.6 % to 88.3 % when it
searched on KL instead (``benchmarks/local_game.py --search-metric``)."""


def build_context(model_path: str | Path | None, *, hw: str, data: str | Path | None,
                  calib_data: str | Path | None = None, metric: str | None = None,
                  runtime: RuntimeConfig | None = None,
                  activation_range: RangeMethod = "auto",
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  rounding: RoundingSettings | None = None,
                  input_shapes: Mapping[str, Sequence[int]] | None = None,
                  progress: Progress | None = None,
                  weight_bits: Collection[int] | None = None,
                  unlabeled_metric: str = "agreement") -> QuantizationContext:
    """Import, load data, calibrate and set up the evaluator.

    With no model, the bundled example; with no data, the example's data (only then).
    Symbolic input dimensions besides the batch take ``input_shapes`` (full shapes, batch 1),
    else the shape of the data's first sample (:func:`import_with_data`). A model whose batch
    is fixed (inputs ``[1, 3, 224, 224]``) runs that many samples at a time. ``weight_bits``
    limits the rounding stage to those weight bit-widths (``eval --bits W8A8`` needs one).
    """
    runtime = runtime or RuntimeConfig()
    rounding = rounding or DEFAULT_ROUNDING
    if model_path is None:
        model_path = example_model_path()
        data = data if data is not None else example_data_path()
    if data is None and calib_data is None:
        raise DataError("no data: give --data (a .npz, an image folder or module:function)")
    profile = load_profile(hw)
    model, full, calibration_only = import_with_data(model_path, data=data,
                                                     calib_data=calib_data,
                                                     input_shapes=input_shapes)
    space = SearchSpace.build(model, profile)
    if calibration_only is None:
        assert full is not None
        calibration_set, eval_set = split_calibration(full)
    else:
        calibration_set = calibration_only
        eval_set = full if full is not None else calibration_set
    batch_size = run_batch_size(model, batch_size)
    if model.fixed_batch is not None:
        logger.info("the model's batch is fixed at %d: it runs that many samples at a time",
                    batch_size)
    chosen_metric = resolve_metric(metric, has_labels=eval_set.labels is not None,
                                   output_shape=output_sample_shape(model),
                                   unlabeled=unlabeled_metric)
    logger.info("evaluating on %d samples of %s, calibrating on %d of %s, with %s",
                len(eval_set), eval_set.source, len(calibration_set), calibration_set.source,
                describe_provider(runtime))

    def calibration_progress(done: int) -> None:
        if progress is not None:
            progress("calibrate", done, len(calibration_set))

    histograms = collect_histograms(
        model, calibration_set.batches(batch_size, pad=model.fixed_batch is not None),
        [layer.activation for layer in model.layers], runtime=runtime,
        progress=calibration_progress)
    settings = CalibrationSettings(
        activation_method=activation_range,
        symmetric_activations=profile.activation_quantization.symmetric,
        per_channel_weights=profile.weight_quantization.granularity == "per_channel",
        weight_rounding=rounding.label)
    high_bits = [name for name, options in space.options.items()
                 if any(FLOAT_BITS > o.a_bits >= CHOICE_BITS for o in options)]
    if activation_range == "auto" and high_bits:
        method, _ = choose_high_bits_method(model, histograms, settings, calibration_set,
                                            layers=high_bits, runtime=runtime,
                                            batch_size=batch_size)
        settings = dataclasses.replace(settings, high_bits_method=method)
    calibration = Calibration(model, histograms, settings)
    cached, rounding_s = round_calibration(calibration, space, calibration_set,
                                           rounding=rounding, runtime=runtime,
                                           progress=progress, weight_bits=weight_bits)
    evaluator = Evaluator(model, calibration, eval_set, chosen_metric, runtime=runtime,
                          batch_size=batch_size, profile_name=profile.name)
    return QuantizationContext(model, profile, space, CostModel(model, profile), eval_set,
                               calibration_set, calibration, evaluator, chosen_metric, runtime,
                               rounding, rounding_s, cached)


def searching_on(context: QuantizationContext, utility: Metric) -> QuantizationContext:
    """``context`` whose evaluator scores ``utility`` on the same data (the FP32 outputs are
    reused; its metric is then ``utility``). The caller keeps the original evaluator to
    report the user's metric."""
    if utility == context.metric:
        return context
    reported = context.evaluator
    evaluator = Evaluator(context.model, context.calibration, context.eval_data, utility,
                          runtime=context.runtime, batch_size=reported.batch_size,
                          profile_name=reported.profile_name, reference=reported.reference)
    return dataclasses.replace(context, evaluator=evaluator, metric=utility)


def import_with_data(model_path: str | Path, *, data: str | Path | None,
                     calib_data: str | Path | None,
                     input_shapes: Mapping[str, Sequence[int]] | None = None
                     ) -> tuple[ImportedModel, Dataset | None, Dataset | None]:
    """The imported model and its data sets (``data``, ``calib_data``) checked against it.

    Symbolic input dimensions besides the batch are fixed to ``input_shapes``; inputs it
    leaves symbolic take the shape of the first sample of ``data`` (else ``calib_data``).
    """
    proto = load_onnx(model_path)
    shapes = {name: tuple(int(d) for d in dims) for name, dims in (input_shapes or {}).items()}
    given = dict(shapes)
    raw = InputSpec.of_proto(proto)
    unresolved = [spec for spec in raw
                  if spec.name not in shapes and any(d is None for d in spec.sample_shape)]
    sources = [source for source in (data, calib_data) if source is not None]
    first: Dataset | None = None
    if unresolved and sources:
        first = load_dataset(sources[0], raw)
        found = first_sample_shapes(first, unresolved)
        logger.info("input shape(s) %s from the first sample of %s", _shapes_text(found),
                    first.source)
        shapes.update(found)
    model = import_model(proto, input_shapes=shapes or None, label=str(model_path))
    specs = InputSpec.of_model(model.ir_model)
    logger.info("%s", describe_inputs(specs))
    hints = []
    if given:
        hints.append(f"--input-shape {_shapes_text(given)}")
    if first is not None:
        hints.append(f"the first sample of {first.source}")
    hint = f"(the shape set by {' and '.join(hints)}; every sample must have it)" \
        if hints else ""

    def loaded(source: str | Path | None) -> Dataset | None:
        if source is None:
            return None
        if first is not None and source is sources[0]:
            data = conform(first, specs, hint=hint)
        else:
            data = load_dataset(source, specs, hint=hint)
        # A float16 model's inputs see float16 values, whatever precision the data has.
        return rounded_to_float16(data, model.float16.inputs)

    return model, loaded(data), loaded(calib_data)


def _shapes_text(shapes: Mapping[str, Sequence[int]]) -> str:
    return " ".join(f"{name}={'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def round_calibration(calibration: Calibration, space: SearchSpace, data: Dataset, *,
                      rounding: RoundingSettings, runtime: RuntimeConfig,
                      progress: Progress | None = None,
                      weight_bits: Collection[int] | None = None) -> tuple[bool, float]:
    """Run (or read from the disk cache) the rounding stage for every weight bit-width of
    ``space`` (only ``weight_bits`` when given: what one policy uses) on at most
    ``rounding.samples`` samples of the calibration set ``data``, and install its table in
    ``calibration``.

    The samples go through in whole model-ready batches (a fixed batch: that batch, else
    ``MOMENTS_BATCH``). Returns (whether the table came from the cache, seconds computing it).
    """
    if rounding.is_identity:
        return True, 0.0
    started = time.perf_counter()
    model = calibration.model
    batch = model.fixed_batch or MOMENTS_BATCH
    n = min(rounding.samples, len(data))
    if model.fixed_batch is not None:
        n -= n % batch
    if n == 0:
        raise DataError(f"the model's batch is fixed at {batch}: give at least {batch} "
                        "calibration samples" if model.fixed_batch is not None else
                        "the calibration data holds no samples; give a non-empty --calib-data")
    used = data.subset(slice(0, n), data.source)
    bits_per_layer = {name: sorted(b for b in {o.w_bits for o in options}
                                   if weight_bits is None or b in weight_bits)
                      for name, options in space.options.items()}
    bits_per_layer = {name: bits for name, bits in bits_per_layer.items() if bits}
    table, cached = cached_rounding(
        model, bits_per_layer, [used.inputs[name] for name in sorted(used.inputs)],
        lambda: used.batches(batch), n, weight=calibration.weight_array,
        scales=calibration.weight_scales, settings=rounding,
        calibration_settings=calibration.settings.weight_key, runtime=runtime, progress=progress,
        per_channel=calibration.settings.per_channel_weights)
    calibration.use_rounded_weights(table)
    return cached, 0.0 if cached else time.perf_counter() - started


def output_sample_shape(model: ImportedModel) -> tuple[int, ...] | None:
    """The first output's shape per sample (its static shape at batch 1, or at the model's
    fixed batch, with a leading batch axis dropped); None when unknown."""
    outputs = model.ir_model.graph.outputs
    shape = model.shapes.get(outputs[0].name or "") if outputs else None
    if shape is None:
        return None
    batch = model.fixed_batch or 1
    return tuple(shape[1:]) if shape and shape[0] == batch else tuple(shape)
