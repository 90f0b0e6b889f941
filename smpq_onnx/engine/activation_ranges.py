"""The 8-bit activation range of ``auto`` calibration, chosen by measurement per model.

Clipping the rare large values (the 99.99th percentile) lowers the rounding noise of every
other value, and wins on CNNs; transformers carry a few outlier channels whose clipping breaks
them, and there the MSE-optimal range, which keeps them, wins (figures in
:class:`~smpq_onnx.quant.calibration.CalibrationSettings`). Neither statistic of a histogram
tells the two apart, so both are measured: every activation at 8 bits (weights float), SQNR of
the output against FP32 on up to ``CHOICE_SAMPLES`` calibration samples, the better kept.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.calibration import Calibration, CalibrationSettings
from smpq_onnx.quant.histogram import StreamingHistogram
from smpq_onnx.quant.options import FLOAT_BITS, Option
from smpq_onnx.quant.policy import Policy

logger = logging.getLogger(__name__)

HighBitsMethod = Literal["percentile", "mse"]
CANDIDATES: tuple[HighBitsMethod, ...] = ("percentile", "mse")
CHOICE_SAMPLES = 64
CHOICE_BITS = 8


def choose_high_bits_method(model: ImportedModel, histograms: Mapping[str, StreamingHistogram],
                            settings: CalibrationSettings, data: Dataset, *,
                            layers: Iterable[str], runtime: RuntimeConfig, batch_size: int
                            ) -> tuple[HighBitsMethod, dict[str, float]]:
    """The candidate range whose model with ``layers``' inputs at 8 bits (every weight float)
    is closest to FP32 on ``data``; and both SQNRs (dB)."""
    subset = data.subset(slice(0, min(len(data), CHOICE_SAMPLES)), data.source)
    quantized = set(layers)
    policy = Policy({layer.name: Option(FLOAT_BITS, CHOICE_BITS if layer.name in quantized
                                        else FLOAT_BITS) for layer in model.layers})
    scores: dict[str, float] = {}
    for method in CANDIDATES:
        candidate = Calibration(model, histograms,
                                dataclasses.replace(settings, high_bits_method=method))
        evaluator = Evaluator(model, candidate, subset, BUILTIN_METRICS["sqnr"], runtime=runtime,
                              batch_size=batch_size, max_segments=1)
        scores[method] = evaluator.evaluate(policy).score
    best = max(CANDIDATES, key=lambda method: (scores[method], -CANDIDATES.index(method)))
    logger.info("8-bit activation ranges: %s (A8 output SQNR on %d calibration samples: %s)",
                best, len(subset),
                ", ".join(f"{m} {np.round(scores[m], 2)} dB" for m in CANDIDATES))
    return best, scores
