"""Calibration: activation statistics captured once, ranges derived per (tensor, bits).

One pass over the calibration batches runs the FP32 model with every quantized activation
tensor requested as an extra output and folds each into a :class:`StreamingHistogram` (bounded
memory). Ranges are derived lazily and cached per (tensor, bits): ``minmax``, ``percentile``,
``mse`` (the clipping range minimizing the histogram's quantization MSE at that bit-width, as
the best clip depends on the bits) or ``auto`` (MSE below 8 bits, percentile from 8). Weights
get per-(layer, bits, channel) clipping the same way, computed on the weights themselves;
fake-quantized weights are cached per (layer, bits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.model.tensors import tensor_batches
from smpq_onnx.quant.histogram import DEFAULT_BINS, StreamingHistogram
from smpq_onnx.quant.quantizers import (
    ActivationQuantParams,
    activation_params,
    bias_scales,
    fake_quant_activation,
    fake_quant_weight,
    quantize_bias,
    quantize_weight,
    weight_qmax,
    weight_scales,
)
from smpq_onnx.quant.weight_rounding import RoundedWeight

logger = logging.getLogger(__name__)

RangeMethod = Literal["auto", "minmax", "percentile", "mse"]
MSE_GRID = 100
WEIGHT_MSE_GRID = 40
MSE_MAX_BITS = 8  # above this the grid is finer than the histogram: min/max is as good


@dataclass(frozen=True)
class CalibrationSettings:
    activation_method: RangeMethod = "auto"
    """``auto``: MSE-optimal clipping below 8 bits; at 8 bits and more ``high_bits_method``
    (measured at W6A6 on MobileNetV2: MSE and percentile tie at 4.7 dB logit SQNR, min/max
    2.9 dB)."""
    high_bits_method: Literal["percentile", "mse"] = "percentile"
    """What ``auto`` uses from 8 bits; the context measures both on the calibration data and
    keeps the better (:mod:`smpq_onnx.engine.activation_ranges`). Neither wins everywhere
    (A8, gptq weights): MobileNetV2 agreement 93.2 % percentile / 89.6 % MSE, while
    all-MiniLM-L6-v2 token cosine is 0.896 percentile / 0.985 MSE, whose outlier channels
    the percentile clips."""
    weight_method: Literal["minmax", "mse"] = "mse"
    percentile: float = 99.99
    bins: int = DEFAULT_BINS
    symmetric_activations: bool = False
    per_channel_weights: bool = True
    weight_rounding: str = "nearest"
    """The rounding stage's settings label (:mod:`smpq_onnx.quant.weight_rounding`, e.g.
    ``gptq+bias-correction``), recorded here so that the evaluation store's key covers it."""

    @property
    def weight_key(self) -> str:
        """The settings that weight scales depend on (the rounding cache's key); activation
        ranges do not enter the rounding stage, which reads FP32 inputs."""
        return f"weights={self.weight_method},per_channel={self.per_channel_weights}"


def collect_histograms(model: ImportedModel, batches: Iterable[Mapping[str, np.ndarray]],
                       tensors: Iterable[str], *, runtime: RuntimeConfig,
                       bins: int = DEFAULT_BINS,
                       progress: Callable[[int], None] | None = None,
                       ) -> dict[str, StreamingHistogram]:
    """Run the FP32 model once over ``batches``, histogramming each of ``tensors``."""
    names = sorted(set(tensors))
    histograms = {name: StreamingHistogram(bins) for name in names}
    for values in tensor_batches(model, names, batches, runtime=runtime, progress=progress):
        for name in names:
            histograms[name].update(values[name])
    return histograms


class Calibration:
    """Quantization parameters for every (tensor, bits) and (layer, bits), computed once."""

    def __init__(self, model: ImportedModel, histograms: Mapping[str, StreamingHistogram],
                 settings: CalibrationSettings) -> None:
        self.model = model
        self.histograms = dict(histograms)
        self.settings = settings
        self._activation: dict[tuple[str, int], ActivationQuantParams] = {}
        self._weights: dict[tuple[str, int], np.ndarray] = {}
        self._weight_arrays: dict[str, np.ndarray] = {}
        self._biases: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray] | None] = {}
        self._scales: dict[tuple[str, int], np.ndarray] = {}
        self._rounded: dict[tuple[str, int], RoundedWeight] = {}

    def use_rounded_weights(self, table: Mapping[tuple[str, int], RoundedWeight]) -> None:
        """Integer weights (and bias shifts) per (layer, bits) from the rounding stage; every
        fake-quant weight, bias and emitted code of those entries comes from them."""
        self._rounded = dict(table)
        self._weights.clear()
        self._biases.clear()
        self._scales.clear()

    def activation(self, tensor: str, bits: int) -> ActivationQuantParams:
        key = (tensor, bits)
        if key not in self._activation:
            lo, hi = self._activation_range(self.histograms[tensor], bits)
            self._activation[key] = activation_params(
                lo, hi, bits, symmetric=self.settings.symmetric_activations)
        return self._activation[key]

    def _activation_range(self, hist: StreamingHistogram, bits: int) -> tuple[float, float]:
        method = self.settings.activation_method
        if method == "auto":
            method = "mse" if bits < 8 else self.settings.high_bits_method
        if method == "percentile":
            return hist.percentile_range(self.settings.percentile)
        if method == "mse" and bits <= MSE_MAX_BITS and hist.total > 0:
            return mse_activation_range(hist, bits, symmetric=self.settings.symmetric_activations)
        return hist.min, hist.max

    def weight(self, layer: QuantizableLayer, bits: int) -> np.ndarray:
        """The layer's weight fake-quantized at ``bits`` (float32, cached)."""
        key = (layer.name, bits)
        if key not in self._weights:
            scales = self.weight_scales(layer, bits)
            if key in self._rounded:
                shape = [1] * len(layer.weight_shape)
                shape[layer.channel_axis] = -1
                codes = self._rounded[key].codes.astype(np.float32)
                self._weights[key] = (codes * scales.reshape(shape)).astype(np.float32)
            else:
                self._weights[key] = fake_quant_weight(self.weight_array(layer), scales, bits,
                                                       layer.channel_axis)
        return self._weights[key]

    def weight_codes(self, layer: QuantizableLayer, bits: int) -> np.ndarray:
        """The integer codes of :meth:`weight` (rounding stage's, else nearest)."""
        if (layer.name, bits) in self._rounded:
            return self._rounded[(layer.name, bits)].codes
        return quantize_weight(self.weight_array(layer), self.weight_scales(layer, bits), bits,
                               layer.channel_axis)

    def bias_shift(self, layer: QuantizableLayer, bits: int) -> np.ndarray | None:
        """Bias correction of the layer at ``bits`` weights (None: none)."""
        rounded = self._rounded.get((layer.name, bits))
        return None if rounded is None else rounded.bias_shift

    def bias_codes(self, layer: QuantizableLayer, w_bits: int, a_bits: int
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        """(int32 codes, scales s_x * s_w) of the layer's bias, or None if int32 overflows.

        Small scales (16-bit tensors) can push codes past int32; such a bias stays in float,
        in the evaluator and in the emitted model alike.
        """
        key = (layer.name, w_bits, a_bits)
        if key not in self._biases:
            assert layer.bias is not None
            value = self.model.ir_model.graph.initializers[layer.bias].const_value
            assert value is not None
            scales = bias_scales(self.activation(layer.activation, a_bits).scale,
                                 self.weight_scales(layer, w_bits))
            bias = np.asarray(value.numpy(), dtype=np.float32)
            shift = self.bias_shift(layer, w_bits)
            if shift is not None:
                bias = (bias + shift).astype(np.float32)
            codes = quantize_bias(bias, scales)
            self._biases[key] = None if codes is None else (codes, scales)
        return self._biases[key]

    def bias(self, layer: QuantizableLayer, w_bits: int, a_bits: int) -> np.ndarray | None:
        """The bias as deployed (codes times scales, float32), or None if it stays float."""
        quantized = self.bias_codes(layer, w_bits, a_bits)
        if quantized is None:
            return None
        codes, scales = quantized
        return (codes.astype(np.float32) * scales).astype(np.float32)

    def weight_scales(self, layer: QuantizableLayer, bits: int) -> np.ndarray:
        key = (layer.name, bits)
        rounded = self._rounded.get(key)
        if rounded is not None and rounded.scales is not None:
            return rounded.scales
        if key not in self._scales:
            weight = self.weight_array(layer)
            channels = weight.shape[layer.channel_axis]
            # Per-tensor weights: one scale for the whole tensor, repeated per channel.
            view = weight if self.settings.per_channel_weights else weight.reshape(1, -1)
            axis = layer.channel_axis if self.settings.per_channel_weights else 0
            if self.settings.weight_method == "mse" and bits <= MSE_MAX_BITS:
                scales = mse_weight_scales(view, bits, axis)
            else:
                absmax = np.abs(np.moveaxis(view, axis, 0)).reshape(view.shape[axis], -1).max(1)
                scales = weight_scales(absmax, bits)
            self._scales[key] = np.broadcast_to(scales, (channels,)).astype(np.float32)
        return self._scales[key]

    def weight_array(self, layer: QuantizableLayer) -> np.ndarray:
        """The layer's float32 weight."""
        if layer.weight not in self._weight_arrays:
            value = self.model.ir_model.graph.initializers[layer.weight]
            assert value.const_value is not None
            self._weight_arrays[layer.weight] = np.asarray(value.const_value.numpy(),
                                                           dtype=np.float32)
        return self._weight_arrays[layer.weight]

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for i, (name, hist) in enumerate(sorted(self.histograms.items())):
            data = hist.to_arrays()
            arrays[f"h{i}_counts"], arrays[f"h{i}_meta"] = data["counts"], data["meta"]
            arrays[f"h{i}_name"] = np.array(name)
        np.savez_compressed(path, allow_pickle=False, **arrays)

    @staticmethod
    def load_histograms(path: Path) -> dict[str, StreamingHistogram]:
        with np.load(path) as data:
            count = sum(1 for key in data.files if key.endswith("_name"))
            return {str(data[f"h{i}_name"]): StreamingHistogram.from_arrays(
                data[f"h{i}_counts"], data[f"h{i}_meta"]) for i in range(count)}


def mse_activation_range(hist: StreamingHistogram, bits: int, *,
                         symmetric: bool) -> tuple[float, float]:
    """The range [a*lo, a*hi] (a in (0, 1]) whose quantizer has the least histogram MSE."""
    lo, hi = min(hist.min, 0.0), max(hist.max, 0.0)
    if hi <= lo:
        return lo, hi
    centers = hist.centers.astype(np.float32)
    weights = hist.counts
    best, best_err = (lo, hi), np.inf
    for alpha in np.linspace(1.0 / MSE_GRID, 1.0, MSE_GRID):
        cand_lo, cand_hi = alpha * lo, alpha * hi
        params = activation_params(cand_lo, cand_hi, bits, symmetric=symmetric)
        err = float(weights @ (fake_quant_activation(centers, params) - centers) ** 2)
        if err < best_err:
            best, best_err = (cand_lo, cand_hi), err
    return best


def mse_weight_scales(weight: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Per-channel scales minimizing each channel's quantization MSE over clip ratios."""
    channels = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    absmax = np.abs(channels).max(axis=1)
    qmax = np.float32(weight_qmax(bits))
    best_scales = weight_scales(absmax, bits)
    best_err = np.full(len(absmax), np.inf)
    for alpha in np.linspace(1.0 / WEIGHT_MSE_GRID, 1.0, WEIGHT_MSE_GRID):
        scales = weight_scales(absmax * alpha, bits)[:, None]
        err = ((np.clip(np.round(channels / scales), -qmax, qmax) * scales - channels) ** 2).sum(1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scales = np.where(better, scales[:, 0], best_scales)
    return best_scales.astype(np.float32)
