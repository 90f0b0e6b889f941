"""Choosing integer weight codes for given scales: nearest, GPTQ, AdaRound (numpy only).

Quantizer (fixed, shared with :mod:`smpq_onnx.quant.quantizers`): symmetric, narrow range, per
output channel, ``qmax = 2^(b-1) - 1``, dequantized ``w_hat = q * s_c`` with the caller's
float32 scales ``s_c > 0``. The methods here only choose the codes ``q`` in
``[-qmax, qmax]``; they never change the scales. Per-tensor scales are just equal ``s_c``
and need nothing special.

Canonical layer form: ``W: float32 [groups, out_per_group, d]`` (Conv weight
``[Cout, Cin/g, *k]`` -> ``W[g] = weight[g*opg:(g+1)*opg].reshape(opg, -1)``; dense layers have
one group and ``d`` input features), ``s: float32 [groups, out_per_group]`` and the layer-input
second moment ``H: float64 [groups, d, d] = E[x x^T]`` (see :mod:`.hessian`).

The objective of every method is the expected squared output error per output channel,
``(w_hat - w) H (w_hat - w)^T`` (:func:`output_error`); :func:`round_weights` keeps, per
channel, whichever of the method's and the nearest codes is lower, so it is never worse than
nearest rounding on the calibration statistics.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smpq_onnx.errors import DataError

log = logging.getLogger(__name__)

Method = Literal["nearest", "gptq", "adaround"]
METHODS: tuple[str, ...] = ("nearest", "gptq", "adaround")

# Rectified sigmoid stretch of AdaRound (Nagel et al., 2020).
_ZETA, _GAMMA = 1.1, -0.1
# Least damping (relative to mean diag H) and an absolute floor: H stays invertible even when
# singular, all-zero (dead inputs) or asked for damp=0.
_REL_DAMP_FLOOR = 1e-10
_ABS_DAMP_FLOOR = 1e-30


def _qmax(bits: int) -> int:
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    return 2 ** (int(bits) - 1) - 1


def _check(W: ArrayLike, s: ArrayLike, H: ArrayLike | None = None
           ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64] | None]:
    w = np.asarray(W, dtype=np.float32)
    sc = np.asarray(s, dtype=np.float32)
    if w.ndim != 3 or sc.shape != w.shape[:2]:
        raise ValueError(f"need W [groups, out, d] and s [groups, out], got {w.shape}, "
                         f"{sc.shape}")
    if not np.all(sc > 0):
        raise ValueError("weight scales must be positive")
    if H is None:
        return w, sc, None
    h = np.asarray(H, dtype=np.float64)
    if h.shape != (w.shape[0], w.shape[2], w.shape[2]):
        raise ValueError(f"H must be [groups, d, d] = {(w.shape[0], w.shape[2], w.shape[2])},"
                         f" got {h.shape}")
    if not np.all(np.isfinite(h)):
        raise DataError("layer-input second moment has NaN/inf; check the calibration data")
    return w, sc, h


def nearest_codes(W: ArrayLike, s: ArrayLike, bits: int) -> NDArray[np.int32]:
    """``clip(round(W / s), -qmax, qmax)`` in float32, half to even (the deployed quantizer)."""
    w, sc, _ = _check(W, s)
    qmax = np.float32(_qmax(bits))
    return np.clip(np.round(w / sc[..., None]), -qmax, qmax).astype(np.int32)


def output_error(W: ArrayLike, s: ArrayLike, Q: ArrayLike, H: ArrayLike) -> NDArray[np.float64]:
    """``err[g, o] = e H[g] e^T`` with ``e = Q[g,o] * s[g,o] - W[g,o]``, float64 ``[groups, out]``.

    ``w_hat = Q * s`` is formed in float32 like the deployed dequantization; with ``H = E[x x^T]``
    this is ``E[(w_hat . x - w . x)^2]`` for each output channel.
    """
    w, sc, h = _check(W, s, H)
    assert h is not None
    e = _dequant(np.asarray(Q), sc) - w.astype(np.float64)
    return np.asarray(np.einsum("god,god->go", np.matmul(e, h), e))


def _dequant(Q: NDArray[Any], s: NDArray[np.float32]) -> NDArray[np.float64]:
    return (Q.astype(np.float32) * s[..., None]).astype(np.float64)


def bias_correction(W: ArrayLike, s: ArrayLike, Q: ArrayLike, mu: ArrayLike
                    ) -> NDArray[np.float64]:
    """Amount to ADD to each output channel's bias: ``-(Q*s - W) @ mu[g]``, ``[groups, out]``.

    With ``mu = E[x]`` of the FP32 layer inputs this is exactly ``E[W x] - E[W_hat x]``, so the
    corrected layer keeps the FP32 mean output on the calibration data (upstream quantization
    shifts the real inputs, which this does not model).
    """
    w, sc, _ = _check(W, s)
    m = np.asarray(mu, dtype=np.float64)
    if m.shape != (w.shape[0], w.shape[2]):
        raise ValueError(f"mu must be [groups, d] = {(w.shape[0], w.shape[2])}, got {m.shape}")
    e = _dequant(np.asarray(Q), sc) - w.astype(np.float64)
    return np.asarray(-np.einsum("god,gd->go", e, m))


# ---------------------------------------------------------------------------------------------
# GPTQ


def _damped(h: NDArray[np.float64], damp: float) -> NDArray[np.float64]:
    """Copy of H with dead inputs (diag <= 0) set to the live mean diag, plus damping."""
    h = h.copy()
    diag = np.diagonal(h, axis1=1, axis2=2).copy()
    live = diag > 0
    n_live = live.sum(axis=1)
    mean = np.where(n_live > 0, (diag * live).sum(axis=1) / np.maximum(n_live, 1), 1.0)
    extra = max(damp, _REL_DAMP_FLOOR) * mean + _ABS_DAMP_FLOOR
    diag = np.where(live, diag, mean[:, None]) + extra[:, None]
    idx = np.arange(h.shape[1])
    h[:, idx, idx] = diag
    return h


def _upper_inverse_cholesky(h: NDArray[np.float64]) -> NDArray[np.float64]:
    """Upper ``U`` with ``U^T U = inv(h)``, batched; raises ``LinAlgError`` if not PD.

    With ``J`` the reversal, ``J h J = L L^T`` gives ``h = R R^T`` for the upper ``R = J L J``,
    so ``U = inv(R)`` (upper, positive diagonal) is the Cholesky factor of ``inv(h)``.
    """
    lower = np.linalg.cholesky(h[:, ::-1, ::-1])
    u = np.triu(np.linalg.inv(lower[:, ::-1, ::-1]))
    if not np.all(np.isfinite(u)) or not np.all(np.diagonal(u, axis1=1, axis2=2) > 0):
        raise np.linalg.LinAlgError("inverse Cholesky factor is not finite")
    return np.asarray(u)


def _gptq_factor(h: NDArray[np.float64], damp: float) -> NDArray[np.float64]:
    """Cholesky factor of the damped inverse Hessian; retries with more damping, never raises."""
    try:
        return _upper_inverse_cholesky(_damped(h, damp))
    except np.linalg.LinAlgError:
        pass
    out = np.empty_like(h)
    for g in range(h.shape[0]):
        d = max(damp, 1e-6)
        for _ in range(8):
            try:
                out[g] = _upper_inverse_cholesky(_damped(h[g:g + 1], d))[0]
                break
            except np.linalg.LinAlgError:
                d *= 10.0
        else:  # hopeless: no error feedback, i.e. nearest rounding for this group
            log.warning("GPTQ: Hessian of group %d not invertible; using nearest rounding", g)
            out[g] = np.diag(1.0 / np.sqrt(np.diagonal(_damped(h[g:g + 1], 1.0)[0])))
    return out


def gptq_codes(W: ArrayLike, s: ArrayLike, bits: int, H: ArrayLike, *, damp: float = 0.01,
               act_order: bool = True, block: int = 128) -> NDArray[np.int32]:
    """GPTQ/OBQ rounding: columns in turn, each error fed back through ``chol(inv(H))``.

    ``H`` is damped by ``damp * mean(diag H)`` (plus a tiny floor); inputs with ``H_ii = 0``
    never carry signal, keep their nearest code and receive no feedback. ``act_order`` visits
    columns by decreasing ``H_ii``. All output channels and all groups are processed at once
    (batched Cholesky; the column loop runs over every group together, so depthwise layers
    with hundreds of 9-wide groups cost one 9-step loop). Singular ``H`` never raises.
    """
    w, sc, h = _check(W, s, H)
    assert h is not None
    qmax = float(_qmax(bits))
    dim = w.shape[2]
    wp = w.astype(np.float64)
    if act_order:
        perm = np.argsort(-np.diagonal(h, axis1=1, axis2=2), axis=1, kind="stable")
        wp = np.take_along_axis(wp, perm[:, None, :], axis=2)
        h = np.take_along_axis(np.take_along_axis(h, perm[:, :, None], axis=1),
                               perm[:, None, :], axis=2)
    u = _gptq_factor(h, damp)
    s64 = sc.astype(np.float64)
    q = np.empty(wp.shape, dtype=np.float64)
    block = max(1, int(block))
    for i1 in range(0, dim, block):
        i2 = min(i1 + block, dim)
        w1 = wp[:, :, i1:i2].copy()
        err1 = np.empty_like(w1)
        u1 = u[:, i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = w1[:, :, j]
            qc = np.clip(np.rint(col / s64), -qmax, qmax)
            q[:, :, i1 + j] = qc
            err = (col - qc * s64) / u1[:, j, j][:, None]
            w1[:, :, j + 1:] -= err[:, :, None] * u1[:, None, j, j + 1:]
            err1[:, :, j] = err
        if i2 < dim:
            wp[:, :, i2:] -= np.matmul(err1, u[:, i1:i2, i2:])
    codes = q.astype(np.int32)
    if act_order:
        codes = np.take_along_axis(codes, np.argsort(perm, axis=1)[:, None, :], axis=2)
    return codes


# ---------------------------------------------------------------------------------------------
# AdaRound


def adaround_codes(W: ArrayLike, s: ArrayLike, bits: int, H: ArrayLike, *,
                   iterations: int = 1000, init: ArrayLike | None = None, lr: float = 0.1,
                   lam: float = 1.0, beta_start: float = 20.0, beta_end: float = 2.0,
                   warmup: float = 0.2, seed: int = 0) -> NDArray[np.int32]:
    """AdaRound on the data-free objective ``sum_o e_o H e_o^T``: learn up/down per weight.

    ``q = floor(W/s) + h(V)``, ``h = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``;
    loss per channel ``(e Hn e^T) + lam * sum(1 - |2h - 1|^beta)`` in code units
    (``e = q - W/s``, ``Hn = H / mean(diag H)``, so ``lam`` does not depend on the layer's
    scale; ``lam ~ 1`` is needed here for ``h`` to end binary), no regulariser for the first
    ``warmup`` fraction, then ``beta`` decays linearly from ``beta_start`` to ``beta_end``;
    Adam on ``V``. ``h`` starts at the fractional part of ``W/s``, or at 0.2 / 0.8 for ``init``
    codes at / above the floor (only up/down is representable). Weights whose floor lies outside
    ``[-qmax, qmax - 1]`` are clipped in the quantizer anyway, so they are fixed at their
    (nearest) clipped code and the clip holds throughout. Final codes:
    ``floor + (h >= 0.5)``. Deterministic: there is no randomness (``seed`` is accepted for
    interface stability and unused).
    """
    del seed
    w, sc, h = _check(W, s, H)
    assert h is not None
    qmax = _qmax(bits)
    ws = (w / sc[..., None]).astype(np.float32)
    base = np.floor(ws)
    free = (base >= -qmax) & (base <= qmax - 1)
    nearest = nearest_codes(w, sc, bits).astype(np.float32)
    qfix = np.where(free, base, nearest).astype(np.float32)
    mask = free.astype(np.float32)

    scale = np.diagonal(h, axis1=1, axis2=2).mean(axis=1)
    hn = (h / np.where(scale > 0, scale, 1.0)[:, None, None]).astype(np.float32)

    if init is None:
        h0 = ws - base
    else:
        up = np.asarray(init, dtype=np.float32) - base
        if up.shape != ws.shape:
            raise ValueError(f"init codes must have shape {ws.shape}, got {up.shape}")
        h0 = np.where(up >= 0.5, 0.8, 0.2).astype(np.float32)
    p0 = np.clip((h0 - _GAMMA) / (_ZETA - _GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p0 / (1 - p0)).astype(np.float32)

    m1 = np.zeros_like(v)
    m2 = np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    stretch = np.float32(_ZETA - _GAMMA)
    iterations = max(0, int(iterations))
    warm = int(warmup * iterations)
    resid = (qfix - ws).astype(np.float32)  # e = resid + mask * h
    for t in range(1, iterations + 1):
        sig = np.tanh(v * np.float32(0.5))
        sig *= np.float32(0.5)
        sig += np.float32(0.5)
        raw = sig * stretch
        raw += np.float32(_GAMMA)
        hv = np.clip(raw, 0.0, 1.0)
        grad = np.matmul(resid + mask * hv, hn)
        grad *= np.float32(2.0)
        if t > warm:
            frac = (t - warm) / max(1, iterations - warm)
            beta = beta_end + (beta_start - beta_end) * (1.0 - frac)
            u = hv * np.float32(2.0) - np.float32(1.0)
            reg = np.abs(u) ** np.float32(beta - 1.0)
            reg *= np.sign(u)
            reg *= np.float32(2.0 * lam * beta)
            grad -= reg
        # dh/dV = stretch * sig * (1 - sig) inside the unclipped region, 0 outside.
        grad *= sig * (np.float32(1.0) - sig) * stretch * (mask * ((raw > 0) & (raw < 1)))
        m1 *= np.float32(b1)
        m1 += np.float32(1 - b1) * grad
        m2 *= np.float32(b2)
        m2 += np.float32(1 - b2) * grad * grad
        step = np.sqrt(m2 / np.float32(1 - b2**t))
        step += np.float32(eps)
        np.divide(m1, step, out=step)
        step *= np.float32(lr / (1 - b1**t))
        v -= step
    sig = 1.0 / (1.0 + np.exp(-v))
    hv = np.clip(sig * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)
    codes = qfix + mask * (hv >= 0.5)
    return np.clip(codes, -qmax, qmax).astype(np.int32)


# ---------------------------------------------------------------------------------------------


def round_weights(method: str, W: ArrayLike, s: ArrayLike, bits: int, H: ArrayLike,
                  **kw: Any) -> NDArray[np.int32]:
    """Codes of ``method`` ("nearest", "gptq", "adaround"), never worse than nearest.

    Per output channel, keeps the method's codes unless the nearest codes have a strictly
    lower :func:`output_error` (ties keep the method's). ``kw`` goes to the method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown rounding method {method!r}; choose one of {METHODS}")
    near = nearest_codes(W, s, bits)
    if method == "nearest":
        return near
    codes = (gptq_codes if method == "gptq" else adaround_codes)(W, s, bits, H, **kw)
    worse = output_error(W, s, near, H) < output_error(W, s, codes, H)
    return np.where(worse[..., None], near, codes).astype(np.int32)
