"""Uniform quantizers in numpy, the reference for what the ONNX fake-quant graph computes.

Activations, per tensor (``symmetric`` from the profile)::

    q = clip(round(x / s) + z, qmin, qmax);   x_hat = (q - z) * s
    asymmetric: qmin = 0, qmax = 2^b - 1, z = round(-lo / s)  (so 0.0 is exact)
    symmetric:  qmin = -2^(b-1), qmax = 2^(b-1) - 1, z = 0

Weights, per output channel, symmetric narrow range::

    q = clip(round(w / s_c), -(2^(b-1) - 1), 2^(b-1) - 1);   w_hat = q * s_c

Every step is float32 and rounds half to even, exactly as ONNX Div/Round/Clip/Add/Sub/Mul do,
so the ONNX graph and these functions agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActivationQuantParams:
    scale: float
    zero_point: int
    qmin: int
    qmax: int
    bits: int

    @property
    def symmetric(self) -> bool:
        return self.zero_point == 0 and self.qmin < 0


def activation_params(lo: float, hi: float, bits: int, *, symmetric: bool) -> ActivationQuantParams:
    """Quantizer parameters covering [lo, hi] (widened to include 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        qmin = -(2 ** (bits - 1))
        bound = max(-lo, hi)
        scale = np.float32(bound / qmax) if bound > 0 else np.float32(1.0)
        return ActivationQuantParams(float(scale), 0, qmin, qmax, bits)
    qmin, qmax = 0, 2**bits - 1
    scale = np.float32((hi - lo) / (qmax - qmin)) if hi > lo else np.float32(1.0)
    zero_point = int(np.clip(np.round(-lo / float(scale)), qmin, qmax))
    return ActivationQuantParams(float(scale), zero_point, qmin, qmax, bits)


def fake_quant_activation(x: np.ndarray, p: ActivationQuantParams) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    scale = np.float32(p.scale)
    q = np.round(x / scale)
    if p.zero_point:
        q = q + np.float32(p.zero_point)
    q = np.clip(q, np.float32(p.qmin), np.float32(p.qmax))
    if p.zero_point:
        q = q - np.float32(p.zero_point)
    return (q * scale).astype(np.float32)


def weight_qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def weight_scales(absmax: np.ndarray, bits: int) -> np.ndarray:
    """Per-channel float32 scales for clipping ranges ``absmax`` (zero channels get scale 1)."""
    absmax = np.asarray(absmax, dtype=np.float64)
    scales = np.where(absmax > 0, absmax / weight_qmax(bits), 1.0)
    return scales.astype(np.float32)


def fake_quant_weight(weight: np.ndarray, scales: np.ndarray, bits: int,
                      axis: int) -> np.ndarray:
    """Symmetric narrow-range per-channel fake quantization along ``axis``."""
    weight = np.asarray(weight, dtype=np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    s = np.asarray(scales, dtype=np.float32).reshape(shape)
    qmax = np.float32(weight_qmax(bits))
    return (np.clip(np.round(weight / s), -qmax, qmax) * s).astype(np.float32)


def quantize_weight(weight: np.ndarray, scales: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """The integer codes of :func:`fake_quant_weight` (int8 up to 8 bits, else int16)."""
    weight = np.asarray(weight, dtype=np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    s = np.asarray(scales, dtype=np.float32).reshape(shape)
    qmax = np.float32(weight_qmax(bits))
    dtype = np.int8 if bits <= 8 else np.int16
    return np.clip(np.round(weight / s), -qmax, qmax).astype(dtype)


INT32_LIMIT = 2**31 - 1


def bias_scales(activation_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """Scale of the int32 bias: s_x * s_w per output channel (float32 product)."""
    return (np.float32(activation_scale) * np.asarray(weight_scales, dtype=np.float32)
            ).astype(np.float32)


def quantize_bias(bias: np.ndarray, scales: np.ndarray) -> np.ndarray | None:
    """int32 codes of ``bias`` at ``scales``; None when a code would not fit in int32."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.round(np.asarray(bias, dtype=np.float64) / scales.astype(np.float64))
    if not np.all(np.isfinite(q)) or np.abs(q).max(initial=0) > INT32_LIMIT:
        return None
    return q.astype(np.int32)
