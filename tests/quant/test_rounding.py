"""Weight rounding (nearest, GPTQ, AdaRound) and the layer-input moments it is driven by."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpq_onnx.errors import DataError
from smpq_onnx.quant.hessian import InputMoments, im2col
from smpq_onnx.quant.rounding import (
    adaround_codes,
    bias_correction,
    gptq_codes,
    nearest_codes,
    output_error,
    round_weights,
)

# ---------------------------------------------------------------------------------------------
# Helpers: an independent direct convolution and small layers with their calibration inputs.


def direct_conv(x: np.ndarray, weight: np.ndarray, *, strides: tuple[int, ...],
                pads: tuple[int, ...], dilations: tuple[int, ...], group: int) -> np.ndarray:
    """ONNX Conv without bias, by explicit loops over output positions and kernel taps."""
    n, c = x.shape[:2]
    nd = x.ndim - 2
    k = weight.shape[2:]
    xp = np.zeros((n, c, *(x.shape[2 + i] + pads[i] + pads[nd + i] for i in range(nd))))
    xp[(slice(None), slice(None), *(slice(pads[i], pads[i] + x.shape[2 + i])
                                    for i in range(nd)))] = x
    out = [(xp.shape[2 + i] - (k[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nd)]
    cout = weight.shape[0]
    opg, cg = cout // group, c // group
    y = np.zeros((n, cout, *out))
    for pos in np.ndindex(*out):
        for tap in np.ndindex(*k):
            idx = tuple(pos[i] * strides[i] + tap[i] * dilations[i] for i in range(nd))
            xs = xp[(slice(None), slice(None), *idx)]
            for g in range(group):
                wg = weight[g * opg:(g + 1) * opg][(slice(None), slice(None), *tap)]
                y[(slice(None), slice(g * opg, (g + 1) * opg), *pos)] += (
                    xs[:, g * cg:(g + 1) * cg] @ wg.T)
    return y


def canonical(weight: np.ndarray, group: int) -> np.ndarray:
    """Conv weight [Cout, Cin/g, *k] -> [g, Cout/g, Cin/g * prod(k)]."""
    return weight.reshape(group, weight.shape[0] // group, -1)


def clip_scales(W: np.ndarray, bits: int, ratio: float, *, per_tensor: bool = False
                ) -> np.ndarray:
    """A simple clipping search stand-in: absmax * ratio / qmax (zero channels get 1)."""
    absmax = np.abs(W).max(axis=-1)
    if per_tensor:
        absmax = np.full_like(absmax, absmax.max())
    qmax = 2 ** (bits - 1) - 1
    return np.where(absmax > 0, absmax * ratio / qmax, 1.0).astype(np.float32)


@dataclass
class Layer:
    W: np.ndarray  # canonical float32 [groups, out, d]
    H: np.ndarray
    mu: np.ndarray


def correlated_rows(rng: np.random.Generator, n: int, d: int, rho: float) -> np.ndarray:
    """Rows with a shared factor (correlation rho) plus a neighbour coupling."""
    x = math.sqrt(rho) * rng.normal(size=(n, 1)) + math.sqrt(1 - rho) * rng.normal(size=(n, d))
    return (x + 0.5 * np.roll(x, 1, axis=1)).astype(np.float32)


def random_layer(kind: str, samples: str, rng: np.random.Generator) -> Layer:
    """A dense, conv (groups=1) or depthwise layer; samples: many, few (singular H), dead."""
    if kind == "dense":
        d, out = int(rng.integers(3, 25)), int(rng.integers(1, 12))
        n = int(rng.integers(1, d)) if samples == "few" else 4 * d
        x = correlated_rows(rng, n, d, float(rng.uniform(0, 0.9)))
        if samples == "dead":
            x[:, rng.integers(d)] = 0
        m = InputMoments.for_dense(d)
        m.update(x)
        W = rng.normal(size=(1, out, d)).astype(np.float32)
    else:
        cin = int(rng.integers(2, 5))
        group = cin if kind == "depthwise" else 1
        cout = cin if kind == "depthwise" else int(rng.integers(1, 7))
        k = (3, 3) if kind == "depthwise" else (int(rng.integers(1, 4)), 3)
        pads = tuple(int(p) for p in rng.integers(0, 2, size=4))
        strides = (int(rng.integers(1, 3)), 1)
        # "few": one image just larger than the kernel -> fewer patches than d.
        size = 4 if samples == "few" else 7
        x = rng.normal(size=(1 if samples == "few" else 3, cin, size, size)).astype(np.float32)
        x += 0.8 * x[:, :1]  # channel correlation
        if samples == "dead":
            x[:, rng.integers(cin)] = 0
        m = InputMoments.for_conv(cin, k, strides=strides, pads=pads, group=group)
        m.update(x)
        W = canonical(rng.normal(size=(cout, cin // group, *k)).astype(np.float32), group)
    return Layer(W, m.hessian(), m.mean())


def explicit_second_moment(patches: np.ndarray) -> np.ndarray:
    return np.einsum("gpi,gpj->gij", patches, patches) / patches.shape[1]


# ---------------------------------------------------------------------------------------------
# im2col and InputMoments


CONV_CASES = [
    # channels, group, kernel, strides, pads, dilations, spatial
    (3, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (6, 5)),
    (4, 2, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2), (7, 6)),
    (5, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (8, 7)),  # depthwise
    (6, 6, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), (5, 5)),  # dilated depthwise
    (3, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (4, 4)),  # pointwise
    (4, 2, (3,), (2,), (1, 2), (2,), (9,)),  # 1-D
    (2, 1, (2, 2, 2), (1, 2, 1), (1, 0, 0, 0, 1, 1), (1, 1, 2), (4, 5, 5)),  # 3-D
]


@pytest.mark.parametrize(("channels", "group", "kernel", "strides", "pads", "dilations",
                          "spatial"), CONV_CASES)
def test_patches_times_canonical_weight_is_the_convolution(
        channels: int, group: int, kernel: tuple[int, ...], strides: tuple[int, ...],
        pads: tuple[int, ...], dilations: tuple[int, ...], spatial: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    n, cout = 2, 2 * group
    x = rng.normal(size=(n, channels, *spatial)).astype(np.float32)
    weight = rng.normal(size=(cout, channels // group, *kernel))
    y = direct_conv(x, weight, strides=strides, pads=pads, dilations=dilations, group=group)
    patches = im2col(x, kernel, strides=strides, pads=pads, dilations=dilations, group=group)
    W = canonical(weight, group)
    via_patches = np.matmul(W, patches.transpose(0, 2, 1))  # [g, opg, n * prod(out)]
    via_patches = via_patches.reshape(cout, n, *y.shape[2:]).swapaxes(0, 1)
    np.testing.assert_allclose(via_patches, y, rtol=1e-10, atol=1e-10)

    # H and mu are the explicit means over every patch, whatever the batching and chunking.
    moments = InputMoments.for_conv(channels, kernel, strides=strides, pads=pads,
                                    dilations=dilations, group=group, chunk_bytes=256)
    moments.update(x[:1])
    moments.update(x[1:])
    assert moments.count == patches.shape[1]
    np.testing.assert_allclose(moments.hessian(), explicit_second_moment(patches),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moments.mean(), patches.mean(axis=1), rtol=1e-12, atol=1e-12)


def test_dense_moments_flatten_leading_axes_and_ignore_chunking() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 7)).astype(np.float32)
    rows = x.reshape(-1, 7).astype(np.float64)
    for chunk_bytes in (1, 100, 2**26):
        m = InputMoments.for_dense(7, chunk_bytes=chunk_bytes)
        m.update(x)
        np.testing.assert_allclose(m.hessian()[0], rows.T @ rows / 15, rtol=1e-12)
        np.testing.assert_allclose(m.mean()[0], rows.mean(axis=0), rtol=1e-12)


def test_moments_without_samples_ask_for_calibration_data() -> None:
    m = InputMoments.for_dense(4)
    with pytest.raises(DataError, match="calibration data"):
        m.hessian()
    with pytest.raises(DataError, match="calibration data"):
        InputMoments.for_conv(2, (3, 3)).mean()


def test_moments_reject_inputs_of_the_wrong_shape() -> None:
    with pytest.raises(DataError):
        InputMoments.for_dense(4).update(np.zeros((2, 5), np.float32))
    with pytest.raises(DataError):
        InputMoments.for_conv(3, (3, 3)).update(np.zeros((1, 2, 5, 5), np.float32))


# ---------------------------------------------------------------------------------------------
# The objective and the quantizer


def test_nearest_codes_are_the_deployed_quantizer() -> None:
    W = np.array([[[0.25, 0.75, -0.25, 3.0, -9.0, 1.25]]], np.float32)
    s = np.array([[0.5]], np.float32)
    # round half to even, then the narrow range [-3, 3] at 3 bits
    np.testing.assert_array_equal(nearest_codes(W, s, 3), [[[0, 2, -0, 3, -3, 2]]])
    assert nearest_codes(W, s, 3).dtype == np.int32


def test_output_error_is_the_expected_squared_output_error() -> None:
    rng = np.random.default_rng(2)
    x = correlated_rows(rng, 500, 12, 0.5)
    m = InputMoments.for_dense(12)
    m.update(x)
    W = rng.normal(size=(1, 5, 12)).astype(np.float32)
    s = clip_scales(W, 3, 0.8)
    Q = nearest_codes(W, s, 3)
    w_hat = (Q * s[..., None]).astype(np.float32)[0].astype(np.float64)
    direct = ((x.astype(np.float64) @ (w_hat - W[0]).T) ** 2).mean(axis=0)
    np.testing.assert_allclose(output_error(W, s, Q, m.hessian())[0], direct, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Never worse than nearest


def assert_never_worse(layer: Layer, bits: int, s: np.ndarray, **kw: object) -> None:
    qmax = 2 ** (bits - 1) - 1
    near = output_error(layer.W, s, nearest_codes(layer.W, s, bits), layer.H)
    for method in ("gptq", "adaround"):
        extra = kw if method == "adaround" else {}
        codes = round_weights(method, layer.W, s, bits, layer.H, **extra)
        assert codes.shape == layer.W.shape
        assert np.issubdtype(codes.dtype, np.integer)
        assert codes.min() >= -qmax and codes.max() <= qmax
        err = output_error(layer.W, s, codes, layer.H)
        assert np.all(err <= near * (1 + 1e-9) + 1e-300), method


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["dense", "conv", "depthwise"]),
       samples=st.sampled_from(["many", "few", "dead"]), bits=st.integers(2, 8),
       ratio=st.floats(0.5, 1.0), per_tensor=st.booleans())
def test_gptq_and_adaround_are_never_worse_than_nearest_per_channel(
        seed: int, kind: str, samples: str, bits: int, ratio: float, per_tensor: bool) -> None:
    layer = random_layer(kind, samples, np.random.default_rng(seed))
    s = clip_scales(layer.W, bits, ratio, per_tensor=per_tensor)
    assert_never_worse(layer, bits, s, iterations=80)


@pytest.mark.parametrize("case", ["fewer samples than d", "dead input", "all-zero H"])
def test_singular_hessians_do_not_raise(case: str) -> None:
    rng = np.random.default_rng(3)
    d = 20
    x = correlated_rows(rng, 5 if case == "fewer samples than d" else 200, d, 0.6)
    if case == "dead input":
        x[:, [2, 7]] = 0
    if case == "all-zero H":
        x[:] = 0
    m = InputMoments.for_dense(d)
    m.update(x)
    layer = Layer(rng.normal(size=(1, 6, d)).astype(np.float32), m.hessian(), m.mean())
    for bits in (2, 4):
        assert_never_worse(layer, bits, clip_scales(layer.W, bits, 0.9), iterations=100)
    # Even with damp=0 the damping floor keeps the factorisation alive.
    gptq_codes(layer.W, clip_scales(layer.W, 4, 0.9), 4, layer.H, damp=0.0)


# ---------------------------------------------------------------------------------------------
# GPTQ


def obq_reference(w: np.ndarray, s: float, qmax: int, H: np.ndarray, damp: float = 0.01
                  ) -> np.ndarray:
    """One row, columns in order, explicit inverse-Hessian downdates (OBQ form of GPTQ)."""
    w = w.astype(np.float64).copy()
    hinv = np.linalg.inv(H + (damp * np.mean(np.diag(H)) + 1e-12) * np.eye(len(w)))
    q = np.zeros(len(w))
    for i in range(len(w)):
        q[i] = np.clip(np.rint(w[i] / s), -qmax, qmax)
        err = (w[i] - q[i] * s) / hinv[i, i]
        w[i + 1:] -= err * hinv[i, i + 1:]
        hinv = hinv - np.outer(hinv[:, i], hinv[i, :]) / hinv[i, i]
    return q


def correlated_dense(seed: int, out: int = 32, d: int = 64, rho: float = 0.9) -> Layer:
    rng = np.random.default_rng(seed)
    m = InputMoments.for_dense(d)
    m.update(correlated_rows(rng, 20 * d, d, rho))
    return Layer(rng.normal(size=(1, out, d)).astype(np.float32), m.hessian(), m.mean())


def test_gptq_is_obq_with_error_feedback_in_column_order() -> None:
    layer = correlated_dense(4, out=4, d=16, rho=0.5)
    s = clip_scales(layer.W, 3, 0.8)
    perm = np.argsort(-np.diag(layer.H[0]), kind="stable")
    in_order = gptq_codes(layer.W, s, 3, layer.H, act_order=False)
    by_act = gptq_codes(layer.W, s, 3, layer.H, act_order=True)
    for o in range(4):
        ref = obq_reference(layer.W[0, o], float(s[0, o]), 3, layer.H[0])
        np.testing.assert_array_equal(in_order[0, o], ref)
        ref_act = obq_reference(layer.W[0, o, perm], float(s[0, o]), 3,
                                layer.H[0][np.ix_(perm, perm)])
        np.testing.assert_array_equal(by_act[0, o, perm], ref_act)


def test_gptq_lazy_blocks_and_group_batching_do_not_change_codes() -> None:
    layer = correlated_dense(5, out=8, d=40, rho=0.7)
    s = clip_scales(layer.W, 4, 0.9)
    ref = gptq_codes(layer.W, s, 4, layer.H, block=1)
    for block in (3, 16, 128):
        np.testing.assert_array_equal(gptq_codes(layer.W, s, 4, layer.H, block=block), ref)
    dw = random_layer("depthwise", "many", np.random.default_rng(6))
    s = clip_scales(dw.W, 4, 0.9)
    batched = gptq_codes(dw.W, s, 4, dw.H)
    for g in range(dw.W.shape[0]):
        np.testing.assert_array_equal(
            batched[g:g + 1], gptq_codes(dw.W[g:g + 1], s[g:g + 1], 4, dw.H[g:g + 1]))


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_cuts_output_error_by_a_fifth_on_correlated_inputs(bits: int) -> None:
    layer = correlated_dense(7)
    s = clip_scales(layer.W, bits, 0.9)
    near = output_error(layer.W, s, nearest_codes(layer.W, s, bits), layer.H).sum()
    gptq = output_error(layer.W, s, round_weights("gptq", layer.W, s, bits, layer.H), layer.H)
    assert gptq.sum() < 0.8 * near


# ---------------------------------------------------------------------------------------------
# AdaRound


@pytest.mark.parametrize("bits", [3, 4])
def test_adaround_cuts_output_error_by_a_fifth_on_correlated_inputs(bits: int) -> None:
    layer = correlated_dense(8)
    s = clip_scales(layer.W, bits, 0.9)
    near = output_error(layer.W, s, nearest_codes(layer.W, s, bits), layer.H).sum()
    codes = adaround_codes(layer.W, s, bits, layer.H, iterations=500)
    assert output_error(layer.W, s, codes, layer.H).sum() < 0.8 * near


def test_adaround_only_rounds_up_or_down_and_is_deterministic() -> None:
    layer = correlated_dense(9, out=6, d=24)
    s = clip_scales(layer.W, 4, 0.7)
    first = adaround_codes(layer.W, s, 4, layer.H, iterations=200)
    np.testing.assert_array_equal(first, adaround_codes(layer.W, s, 4, layer.H, iterations=200))
    floor = np.floor(layer.W / s[..., None])
    inside = (floor >= -7) & (floor <= 6)
    assert np.all(np.isin(first - floor, [0, 1])[inside])
    np.testing.assert_array_equal(first[~inside], nearest_codes(layer.W, s, 4)[~inside])
    # zero iterations from the fractional part is nearest rounding (up to exact ties)
    np.testing.assert_array_equal(adaround_codes(layer.W, s, 4, layer.H, iterations=0),
                                  nearest_codes(layer.W, s, 4))


# ---------------------------------------------------------------------------------------------
# Bias correction


def test_bias_correction_restores_the_fp32_mean_output_of_a_dense_layer() -> None:
    rng = np.random.default_rng(10)
    x = correlated_rows(rng, 300, 16, 0.5) + 1.0
    m = InputMoments.for_dense(16)
    m.update(x)
    W = rng.normal(size=(1, 8, 16)).astype(np.float32)
    s = clip_scales(W, 3, 0.7)
    Q = round_weights("gptq", W, s, 3, m.hessian())
    w_hat = (Q * s[..., None]).astype(np.float32)[0].astype(np.float64)
    x64 = x.astype(np.float64)
    fp32_mean = (x64 @ W[0].T.astype(np.float64)).mean(axis=0)
    corrected = (x64 @ w_hat.T).mean(axis=0) + bias_correction(W, s, Q, m.mean())[0]
    np.testing.assert_allclose(corrected, fp32_mean, rtol=1e-6, atol=1e-9)


def test_bias_correction_restores_the_fp32_mean_output_of_a_grouped_padded_conv() -> None:
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(3, 4, 6, 6)) + 0.5).astype(np.float32)
    strides, pads, dilations, group = (2, 1), (1, 0, 1, 1), (1, 1), 2
    weight = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
    m = InputMoments.for_conv(4, (3, 3), strides=strides, pads=pads, group=group)
    m.update(x)
    W = canonical(weight, group)
    s = clip_scales(W, 3, 0.8)
    Q = round_weights("adaround", W, s, 3, m.hessian(), iterations=100)
    w_hat = (Q * s[..., None]).astype(np.float32).reshape(weight.shape)
    fp32, quant = (direct_conv(x, w.astype(np.float64), strides=strides, pads=pads,
                               dilations=dilations, group=group) for w in (weight, w_hat))
    corrected = quant.mean(axis=(0, 2, 3)) + bias_correction(W, s, Q, m.mean()).reshape(-1)
    np.testing.assert_allclose(corrected, fp32.mean(axis=(0, 2, 3)), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Wrapper


def test_round_weights_rejects_unknown_methods_and_nearest_is_nearest() -> None:
    layer = correlated_dense(12, out=3, d=8)
    s = clip_scales(layer.W, 4, 1.0)
    np.testing.assert_array_equal(round_weights("nearest", layer.W, s, 4, layer.H),
                                  nearest_codes(layer.W, s, 4))
    with pytest.raises(ValueError, match="unknown rounding method"):
        round_weights("stochastic", layer.W, s, 4, layer.H)
