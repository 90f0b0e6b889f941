"""Metrics of a quantized model's outputs, against labels or against the FP32 outputs.

Each metric maps (outputs, fp32 outputs, labels) to one float, larger is better:
``top1`` (needs labels), ``agreement`` (top-1 agreement with FP32), ``kl`` (minus the mean
KL(FP32 || quantized) of the softmax outputs), ``sqnr`` (dB, at most 120), ``cosine`` (mean
per sample);
``module:function`` loads a user metric with the same signature.

When the inputs hold an attention mask that lines up with the output (token states
``[batch, seq, hidden]`` and a mask ``[batch, seq]``), ``cosine`` and ``sqnr`` score token
positions the mask keeps, one row per token (:func:`find_token_mask`): padding is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from smpq_onnx.errors import DataError
from smpq_onnx.plugins import load_function

MetricFunction = Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


@dataclass(frozen=True)
class Metric:
    name: str
    function: MetricFunction
    needs_labels: bool = False
    percent: bool = False
    """Shown in percent (a fraction of samples); differences are 'points'."""

    def __call__(self, outputs: np.ndarray, reference: np.ndarray,
                 labels: np.ndarray | None) -> float:
        if self.needs_labels and labels is None:
            raise DataError(f"metric '{self.name}' needs labels: add an integer array 'y' to "
                            "the data, or use --metric agreement")
        return float(self.function(outputs, reference, labels))


def _flat(outputs: np.ndarray) -> np.ndarray:
    return outputs.reshape(len(outputs), -1).astype(np.float64)


def _top1(outputs: np.ndarray, _: np.ndarray, labels: np.ndarray | None) -> float:
    assert labels is not None
    return float(np.mean(_flat(outputs).argmax(1) == labels))


def _agreement(outputs: np.ndarray, reference: np.ndarray, _: np.ndarray | None) -> float:
    return float(np.mean(_flat(outputs).argmax(1) == _flat(reference).argmax(1)))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _neg_kl(outputs: np.ndarray, reference: np.ndarray, _: np.ndarray | None) -> float:
    log_p, log_q = _log_softmax(_flat(reference)), _log_softmax(_flat(outputs))
    return -float(np.mean((np.exp(log_p) * (log_p - log_q)).sum(axis=1)))


SQNR_CAP_DB = 120.0  # identical outputs score this instead of infinity (games need finite values)


def _sqnr(outputs: np.ndarray, reference: np.ndarray, _: np.ndarray | None) -> float:
    ref, out = _flat(reference), _flat(outputs)
    signal = float((ref**2).sum())
    noise = float(((out - ref) ** 2).sum())
    floor = signal * 10 ** (-SQNR_CAP_DB / 10)
    return 10.0 * float(np.log10(max(signal, 1e-30) / max(noise, floor, 1e-30)))


def _cosine(outputs: np.ndarray, reference: np.ndarray, _: np.ndarray | None) -> float:
    ref, out = _flat(reference), _flat(outputs)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return float(np.mean((ref * out).sum(axis=1) / np.maximum(norms, 1e-30)))


BUILTIN_METRICS = {
    "top1": Metric("top1", _top1, needs_labels=True, percent=True),
    "agreement": Metric("agreement", _agreement, percent=True),
    "kl": Metric("kl", _neg_kl),
    "sqnr": Metric("sqnr", _sqnr),
    "cosine": Metric("cosine", _cosine),
}


CLASS_METRICS = ("top1", "agreement", "kl")
"""Metrics that read the output as class scores ``[batch, classes]``."""
SEARCH_UTILITY = "kl"
"""What a search maximizes on class scores, whichever class metric it reports: KL to FP32
moves with every sample's output, where top-1 and agreement move in whole samples. Among
150 policies at one BOPs budget of the depthwise Fashion net, KL on the 1000 search images
ranks their top-1 on 10 000 held-out images with Kendall tau 0.71 against top-1's own 0.50
(0.83 against 0.68 on the Fashion ResNet; README, "The search's utility")."""
TOKEN_METRICS = ("cosine", "sqnr")
"""Fidelity metrics that score kept token positions only, when the inputs hold a mask."""
MASK_HINTS = ("mask",)


def find_token_mask(inputs: Mapping[str, np.ndarray], batched: Iterable[str],
                    output_sample_shape: tuple[int, ...]) -> tuple[str, np.ndarray] | None:
    """The attention mask among ``inputs`` (samples on axis 0), if one lines up with the output.

    A mask is a batched integer or boolean input named like ``attention_mask``, holding only 0
    and 1, whose per-sample shape is a prefix of the output's per-sample shape shorter than it
    (``[seq]`` against ``[seq, hidden]``). Returns (its name, a boolean array ``[n, *prefix]``).
    """
    for name in sorted(batched):
        array = inputs[name]
        if not any(hint in name.lower() for hint in MASK_HINTS):
            continue
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            continue
        prefix = array.shape[1:]
        if (len(prefix) >= len(output_sample_shape) or len(prefix) == 0
                or tuple(output_sample_shape[:len(prefix)]) != prefix):
            continue
        if not np.isin(array, (0, 1)).all() or not array.any():
            continue
        return name, array.astype(bool)
    return None


def kept_rows(outputs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``outputs`` ``[n, *prefix, *rest]`` -> one row per kept position ``[kept, prod(rest)]``."""
    rows = outputs.reshape(mask.size, -1)
    return rows[mask.reshape(-1)]


def search_utility(metric: Metric) -> Metric:
    """The utility a search maximizes to report ``metric``: :data:`SEARCH_UTILITY` for the
    class metrics, ``metric`` itself for any other (cosine, sqnr, a user's function)."""
    return BUILTIN_METRICS[SEARCH_UTILITY] if metric.name in CLASS_METRICS else metric


def resolve_metric(name: str | None, *, has_labels: bool,
                   output_shape: tuple[int | None, ...] | None = None,
                   unlabeled: str = "agreement") -> Metric:
    """A built-in metric, a ``module:function`` one, or the default.

    The default is top1 with labels, else ``unlabeled`` (agreement unless a caller wants a
    finer utility), for class scores (an output of shape
    ``[batch, classes]``); for any other output (feature maps, embeddings, token states) it is
    ``cosine``, and a class metric asked for on such an output is an error. ``output_shape``:
    the model's first output with the batch axis removed (None: not known, class scores
    assumed).
    """
    scores = output_shape is None or (len(output_shape) == 1 and (output_shape[0] or 2) >= 2)
    if name is None:
        if not scores:
            return BUILTIN_METRICS["cosine"]
        return BUILTIN_METRICS["top1" if has_labels else unlabeled]
    if name in BUILTIN_METRICS:
        if name in CLASS_METRICS and not scores:
            shape = "x".join("?" if d is None else str(d) for d in output_shape or ())
            raise DataError(f"metric {name!r} compares class scores, but the model's output "
                            f"has per-sample shape [{shape}]: use --metric cosine or sqnr "
                            "(or a module:function metric)")
        return BUILTIN_METRICS[name]
    if ":" in name:
        return Metric(name, load_function(name, kind="metric"))
    known = ", ".join(BUILTIN_METRICS)
    raise DataError(f"unknown metric {name!r}; use one of {known} or module:function")
