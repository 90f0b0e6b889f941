"""The weight-rounding stage: integer weights per (layer, bits) chosen for the layer's *output*.

After calibration, one FP32 pass over (at most ``samples`` of) the calibration data
accumulates every layer's input moments (H = E[x x^T] over im2col patches, mu = E[x];
streaming, :mod:`smpq_onnx.quant.hessian`). Then, for every quantizable layer and every
weight bit-width up to 8 the search space allows, the method of :mod:`smpq_onnx.quant.rounding`
chooses the codes on the calibration's own per-channel scales (MSE clipping), never worse than
nearest on the calibration objective. ``bias_correction`` adds -(W_hat - W) mu to the layer's
bias, so its mean output on the calibration data is the FP32 one.

Inputs are FP32, so the result for (layer, bits) does not depend on the other layers' bits:
every policy of every method and the emitted model use the same table
(:meth:`Calibration.use_rounded_weights`). The table is cached on disk
(:func:`cached_rounding`), keyed by model, calibration data and settings.

Layers handled: Conv (any groups; explicit or SAME pads), Gemm (transA = 0), MatMul with a
2-D constant weight. ConvTranspose, weights shared by several layers (their inputs differ) and
anything else keep nearest codes (logged). Layers without a bias get no bias correction.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx_ir as ir

from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.model.tensors import tensor_batches
from smpq_onnx.quant.hessian import InputMoments
from smpq_onnx.quant.rounding import bias_correction, output_error, round_weights

logger = logging.getLogger(__name__)

RoundingMethod = Literal["nearest", "gptq", "adaround"]
ROUNDING_METHODS: tuple[str, ...] = ("nearest", "gptq", "adaround")
MAX_ROUNDED_BITS = 8  # above, nearest rounding error is already negligible
ROUNDING_VERSION = "2"  # part of the cache key: bump when the codes a setting gives change
MOMENTS_BATCH = 16  # samples per FP32 pass: every layer input of a batch is held at once
SCALE_GRID = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
"""Clipping ranges tried by ``scale_search``, as fractions of a channel's largest |weight|."""


@dataclass(frozen=True)
class RoundingSettings:
    method: str = "nearest"
    bias_correction: bool = False
    samples: int = 256
    """At most this many calibration samples feed the input moments."""
    scale_search: bool = False
    """Also choose each channel's clipping range for the output error: the method runs at the
    calibration's MSE scale and at ``SCALE_GRID`` fractions of the channel's largest weight,
    and each channel keeps the scale (and codes) of least output error (one scale per tensor
    under per-tensor weights)."""

    @property
    def label(self) -> str:
        return (self.method + ("+bias-correction" if self.bias_correction else "")
                + ("+scale-search" if self.scale_search else ""))

    @property
    def is_identity(self) -> bool:
        return self.method == "nearest" and not self.bias_correction and not self.scale_search


@dataclass(frozen=True)
class RoundedWeight:
    codes: np.ndarray
    """Integer codes in the layer's own weight layout (int8, or int16 above 8 bits)."""
    bias_shift: np.ndarray | None
    """Float32 per output channel, added to the float bias before its int32 quantization."""
    scales: np.ndarray | None = None
    """Float32 per output channel when the stage chose them (``scale_search``), else None:
    the calibration's."""


RoundedTable = dict[tuple[str, int], RoundedWeight]


@dataclass(frozen=True)
class _Layout:
    """How a layer's weight maps to the canonical ``[groups, out_per_group, d]`` form."""

    groups: int
    transpose: bool
    """Dense weights stored [in, out] (MatMul, Gemm transB=0) are transposed first."""
    moments: Callable[[], InputMoments]
    input_axis_last: bool = True
    """Dense inputs: features on the last axis (False: W @ x, features on axis -2)."""
    bias_gain: float = 1.0
    """Bias shift = bias_gain * (-(W_hat - W) mu): Gemm computes alpha W x + beta C."""

    def canonical(self, weight: np.ndarray) -> np.ndarray:
        w = weight.T if self.transpose else weight
        return np.ascontiguousarray(w.reshape(self.groups, w.shape[0] // self.groups, -1),
                                    dtype=np.float32)

    def original(self, codes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if self.transpose:
            return codes.reshape(shape[::-1]).T
        return codes.reshape(shape)


def layer_layout(model: ImportedModel, layer: QuantizableLayer) -> _Layout | None:
    node = _node(model, layer)
    shape = tuple(int(d) for d in layer.weight_shape)
    if layer.op_type == "Conv":
        group = _int(node, "group", 1)
        kernel = shape[2:]
        spatial_in = tuple(int(d) for d in layer.input_shape[2:])
        spatial_out = tuple(int(d) for d in layer.output_shape[2:])
        strides = _ints(node, "strides") or [1] * len(kernel)
        dilations = _ints(node, "dilations") or [1] * len(kernel)
        pads = _conv_pads(node, kernel, strides, dilations, spatial_in, spatial_out)
        channels = int(layer.input_shape[1])
        return _Layout(group, False, lambda: InputMoments.for_conv(
            channels, kernel, strides=strides, pads=pads, dilations=dilations, group=group))
    if layer.op_type == "Gemm":
        if _int(node, "transA", 0) or len(shape) != 2:
            return None
        trans_b = bool(_int(node, "transB", 0))
        features = shape[1] if trans_b else shape[0]
        alpha, beta = _float(node, "alpha", 1.0), _float(node, "beta", 1.0)
        return _Layout(1, not trans_b, lambda: InputMoments.for_dense(features),
                       bias_gain=alpha / beta if beta != 0 else 0.0)
    if layer.op_type == "MatMul" and len(shape) == 2:
        if layer.channel_axis == 1:  # x @ W, W [K, N]
            return _Layout(1, True, lambda: InputMoments.for_dense(shape[0]))
        return _Layout(1, False, lambda: InputMoments.for_dense(shape[1]),
                       input_axis_last=False)  # W @ x, W [M, K]
    return None


def collect_input_moments(model: ImportedModel, layers: Sequence[QuantizableLayer],
                          layouts: Mapping[str, _Layout],
                          batches: Iterable[Mapping[str, np.ndarray]], *,
                          runtime: RuntimeConfig,
                          progress: Callable[[int], None] | None = None
                          ) -> dict[str, InputMoments]:
    """One FP32 pass over ``batches``: each layer's input moments."""
    moments = {layer.name: layouts[layer.name].moments() for layer in layers
               if layer.name in layouts}
    tensors = {layer.activation for layer in layers if layer.name in moments}
    for values in tensor_batches(model, tensors, batches, runtime=runtime, progress=progress):
        for layer in layers:
            if layer.name not in moments:
                continue
            x = values[layer.activation]
            if not layouts[layer.name].input_axis_last:
                x = np.swapaxes(x, -1, -2)
            moments[layer.name].update(x)
    return moments


def round_model(model: ImportedModel, bits_per_layer: Mapping[str, Sequence[int]],
                batches: Iterable[Mapping[str, np.ndarray]], *,
                weight: Callable[[QuantizableLayer], np.ndarray],
                scales: Callable[[QuantizableLayer, int], np.ndarray],
                settings: RoundingSettings, runtime: RuntimeConfig,
                progress: Callable[[str, int, int], None] | None = None,
                n_samples: int = 0, per_channel: bool = True) -> RoundedTable:
    """Codes (and bias shifts) for every (layer, bits <= 8) of ``bits_per_layer``."""
    layers = [layer for layer in model.layers
              if any(b <= MAX_ROUNDED_BITS for b in bits_per_layer.get(layer.name, ()))]
    readers: dict[str, int] = {}
    for layer in model.layers:
        readers[layer.weight] = readers.get(layer.weight, 0) + 1
    layouts = {}
    for layer in layers:
        layout = layer_layout(model, layer) if readers[layer.weight] == 1 else None
        if layout is None:
            logger.info("layer %s (%s): nearest rounding (a weight shared with another layer, "
                        "or a form without input statistics)", layer.name, layer.op_type)
        else:
            layouts[layer.name] = layout
    if not layouts:
        return {}

    def moments_progress(done: int) -> None:
        if progress is not None:
            progress("round: statistics", min(done, n_samples), n_samples)

    moments = collect_input_moments(model, layers, layouts, batches, runtime=runtime,
                                    progress=moments_progress)
    jobs = [(layer, b) for layer in layers if layer.name in layouts
            for b in sorted(set(bits_per_layer[layer.name])) if b <= MAX_ROUNDED_BITS]
    table: RoundedTable = {}
    current, hessian = "", np.empty(0)
    for done, (layer, bits) in enumerate(jobs, 1):  # layer by layer: one H per layer
        layout, stats = layouts[layer.name], moments[layer.name]
        w = layout.canonical(weight(layer))
        s = np.asarray(scales(layer, bits), dtype=np.float32).reshape(w.shape[:2])
        if layer.name != current:
            current, hessian = layer.name, stats.hessian()
        s, codes = _best_rounding(w, s, bits, hessian, settings, per_channel=per_channel)
        shift = None
        if settings.bias_correction and layer.bias is not None and layout.bias_gain != 0:
            shift = (layout.bias_gain * bias_correction(w, s, codes, stats.mean())
                     ).reshape(-1).astype(np.float32)
        table[(layer.name, bits)] = RoundedWeight(
            layout.original(codes.astype(np.int8 if bits <= 8 else np.int16),
                            tuple(int(d) for d in layer.weight_shape)), shift,
            s.reshape(-1).astype(np.float32) if settings.scale_search else None)
        if progress is not None:
            progress("round: weights", done, len(jobs))
    return table


def _best_rounding(w: np.ndarray, s: np.ndarray, bits: int, hessian: np.ndarray,
                   settings: RoundingSettings, *, per_channel: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(scales, codes) of least output error per channel over the candidate scales."""
    codes = round_weights(settings.method, w, s, bits, hessian)
    if not settings.scale_search:
        return s, codes
    error = output_error(w, s, codes, hessian)
    absmax = np.abs(w).max(axis=-1)
    if not per_channel:
        absmax = np.full_like(absmax, absmax.max())
    qmax = 2 ** (bits - 1) - 1
    for fraction in SCALE_GRID:
        candidate = np.where(absmax > 0, absmax * fraction / qmax, 1.0).astype(np.float32)
        trial = round_weights(settings.method, w, candidate, bits, hessian)
        trial_error = output_error(w, candidate, trial, hessian)
        better = trial_error < error if per_channel else \
            np.full_like(error, trial_error.sum() < error.sum(), dtype=bool)
        s = np.where(better, candidate, s).astype(np.float32)
        codes = np.where(better[..., None], trial, codes)
        error = np.where(better, trial_error, error)
    return s, codes


def cached_rounding(model: ImportedModel, bits_per_layer: Mapping[str, Sequence[int]],
                    calibration_arrays: Sequence[np.ndarray],
                    batches: Callable[[], Iterable[Mapping[str, np.ndarray]]], n_samples: int,
                    *, weight: Callable[[QuantizableLayer], np.ndarray],
                    scales: Callable[[QuantizableLayer, int], np.ndarray],
                    settings: RoundingSettings, calibration_settings: str,
                    runtime: RuntimeConfig, cache_dir: Path | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    per_channel: bool = True) -> tuple[RoundedTable, bool]:
    """The rounding table, from the disk cache when the same inputs made it before.

    Returns (table, whether it came from the cache). ``calibration_arrays``: the calibration
    samples used (they key the cache); ``batches()``: the same ``n_samples`` samples as
    model-ready feeds, called only when the table must be computed.
    """
    key = rounding_key(model, calibration_arrays, bits_per_layer, settings=settings,
                       calibration_settings=calibration_settings)
    path = (cache_dir or default_cache_dir()) / f"rounding-{key}.npz"
    if path.exists():
        try:
            table = load_table(path)
            logger.info("weight rounding %s: %d (layer, bits) entries from %s",
                        settings.label, len(table), path)
            return table, True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            logger.warning("ignoring unreadable rounding cache %s (%s); recomputing", path, e)
    table = round_model(model, bits_per_layer, batches(), weight=weight, scales=scales,
                        settings=settings, runtime=runtime, progress=progress,
                        n_samples=n_samples, per_channel=per_channel)
    try:
        save_table(table, path)
    except OSError as e:  # a read-only home: the run still works, only slower next time
        logger.warning("could not write the rounding cache %s (%s)", path, e)
    return table, False


def rounding_key(model: ImportedModel, calibration_inputs: Iterable[np.ndarray],
                 bits_per_layer: Mapping[str, Sequence[int]], *, settings: RoundingSettings,
                 calibration_settings: str) -> str:
    digest = hashlib.sha256()
    digest.update(ir.to_proto(model.ir_model).SerializeToString())
    for array in calibration_inputs:
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(sorted((k, sorted(v)) for k, v in bits_per_layer.items())).encode())
    digest.update(repr(settings).encode())
    digest.update(calibration_settings.encode())
    digest.update(ROUNDING_VERSION.encode())
    return digest.hexdigest()[:24]


def default_cache_dir() -> Path:
    """``$SMPQ_CACHE_DIR``, else ``$XDG_CACHE_HOME/smpq-onnx``, else ``~/.cache/smpq-onnx``."""
    if os.environ.get("SMPQ_CACHE_DIR"):
        return Path(os.environ["SMPQ_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smpq-onnx"


def save_table(table: RoundedTable, path: Path) -> None:
    """Atomic write (temp file, then rename): a killed run never leaves half a table."""
    arrays: dict[str, np.ndarray] = {}
    for i, ((name, bits), rounded) in enumerate(sorted(table.items())):
        arrays[f"k{i}"] = np.array([name, str(bits)])
        arrays[f"c{i}"] = rounded.codes
        if rounded.bias_shift is not None:
            arrays[f"b{i}"] = rounded.bias_shift
        if rounded.scales is not None:
            arrays[f"s{i}"] = rounded.scales
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_table(path: Path) -> RoundedTable:
    table: RoundedTable = {}
    with np.load(path, allow_pickle=False) as data:
        count = sum(1 for key in data.files if key.startswith("k"))
        for i in range(count):
            name, bits = (str(v) for v in data[f"k{i}"])
            shift = data[f"b{i}"] if f"b{i}" in data.files else None
            scales = data[f"s{i}"] if f"s{i}" in data.files else None
            table[(name, int(bits))] = RoundedWeight(data[f"c{i}"], shift, scales)
    return table


def _node(model: ImportedModel, layer: QuantizableLayer) -> ir.Node:
    for node in model.ir_model.graph:
        if node.name == layer.name:
            return node
    raise KeyError(layer.name)


def _int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.as_int()) if attr is not None else default


def _float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return float(attr.as_float()) if attr is not None else default


def _ints(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return [int(v) for v in attr.as_ints()] if attr is not None else None


def _conv_pads(node: ir.Node, kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], spatial_in: Sequence[int],
               spatial_out: Sequence[int]) -> list[int]:
    """Explicit pads [begin..., end...] of a Conv, from ``pads`` or ``auto_pad``."""
    auto = node.attributes.get("auto_pad")
    mode = auto.as_string() if auto is not None else "NOTSET"
    if mode in ("NOTSET", ""):
        return _ints(node, "pads") or [0] * (2 * len(kernel))
    if mode == "VALID":
        return [0] * (2 * len(kernel))
    begins, ends = [], []
    for k, s, d, n_in, n_out in zip(kernel, strides, dilations, spatial_in, spatial_out,
                                    strict=True):
        total = max((n_out - 1) * s + (k - 1) * d + 1 - n_in, 0)
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if mode == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    return begins + ends
