"""The weight-rounding stage end to end: layer layouts, output error, bias correction, the
disk cache, and the codes the fake-quant engine and the emitted model use.

Layer outputs are computed by onnxruntime on single-node models that copy the layer's node
(same op and attributes), fed the FP32 layer inputs of the whole model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import conv_chain, make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import smpq_onnx
from smpq_onnx.api.context import QuantizationContext, build_context
from smpq_onnx.model.importer import ImportedModel, import_model
from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant import weight_rounding
from smpq_onnx.quant.calibration import Calibration, CalibrationSettings, collect_histograms
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.weight_rounding import (
    RoundedTable,
    RoundingSettings,
    layer_layout,
    load_table,
    round_model,
)

RUNTIME = RuntimeConfig(provider="cpu", threads=1)
SAMPLES = 64
BATCH = 16
ALL_BITS = range(2, 9)

# ---------------------------------------------------------------------------------------------
# A model with the four layer kinds, and each layer as a single-node model.


def four_layer_model() -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(3->4, 3x3, pad 1, bias) -> Relu -> depthwise Conv(group 4, stride 2,
    pad 1, bias) -> Flatten -> Gemm(transB, 64->10, bias) -> Relu -> MatMul(W [10, 6])."""
    rng = np.random.default_rng(7)
    inits = {
        "w_conv": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b_conv": rng.normal(size=4).astype(np.float32),
        "w_dw": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "b_dw": rng.normal(size=4).astype(np.float32),
        "w_fc": (rng.normal(size=(10, 64)) * 0.2).astype(np.float32),
        "b_fc": rng.normal(size=10).astype(np.float32),
        "w_mm": rng.normal(size=(10, 6)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w_conv", "b_conv"], ["c1"], name="conv",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w_dw", "b_dw"], ["c2"], name="dw", group=4,
                         strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w_fc", "b_fc"], ["g"], name="fc", transB=1),
        helper.make_node("Relu", ["g"], ["r2"], name="relu2"),
        helper.make_node("MatMul", ["r2", "w_mm"], ["y"], name="mm"),
    ]
    return make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def single_node(node: onnx.NodeProto, *, bias: bool) -> ort.InferenceSession:
    """The node alone, with its data input, weight (and bias) all fed: ``y = layer(x, w[, b])``."""
    names = ["x", "w", "b"] if bias else ["x", "w"]
    copy = helper.make_node(node.op_type, names, ["y"], name=node.name)
    copy.attribute.extend(node.attribute)
    model = make_model([copy], [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                for n in names],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], {})
    return session(model)


@dataclass(frozen=True)
class Setup:
    proto: onnx.ModelProto
    model: ImportedModel
    layers: dict[str, QuantizableLayer]
    inputs: ort.InferenceSession
    """The FP32 model with every layer's input tensor as an extra output."""
    plain: dict[str, ort.InferenceSession]
    """Each layer without its bias (the output error is linear in the weight error)."""
    biased: dict[str, ort.InferenceSession]

    def layer_inputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        names = [layer.activation for layer in self.layers.values() if layer.activation != "x"]
        values = dict(zip(names, self.inputs.run(names, {"x": x}), strict=True))
        values["x"] = x
        return {name: values[layer.activation] for name, layer in self.layers.items()}

    def weight(self, name: str) -> np.ndarray:
        return next(numpy_helper.to_array(init) for init in self.proto.graph.initializer
                    if init.name == name)


@functools.cache
def setup() -> Setup:
    proto = four_layer_model()
    model = import_model(proto)
    layers = {layer.name: layer for layer in model.layers}
    assert list(layers) == ["conv", "dw", "fc", "mm"]
    assert {name: layer.bias is not None for name, layer in layers.items()} == {
        "conv": True, "dw": True, "fc": True, "mm": False}
    extra = onnx.ModelProto()
    extra.CopyFrom(proto)
    for name in ("r1", "f", "r2"):
        extra.graph.output.append(helper.make_empty_tensor_value_info(name))
    nodes = {node.name: node for node in proto.graph.node}
    return Setup(proto, model, layers, session(extra),
                 {name: single_node(nodes[name], bias=False) for name in layers},
                 {name: single_node(nodes[name], bias=True) for name in layers if name != "mm"})


def calibration_data(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(SAMPLES, 3, 8, 8)) + rng.uniform(-1, 1)).astype(np.float32)


def batches(x: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{"x": x[i:i + BATCH]} for i in range(0, len(x), BATCH)]


def calibrate(model: ImportedModel, x: np.ndarray) -> Calibration:
    histograms = collect_histograms(model, batches(x), [la.activation for la in model.layers],
                                    runtime=RUNTIME)
    return Calibration(model, histograms, CalibrationSettings())


def channel_shape(layer: QuantizableLayer) -> list[int]:
    shape = [1] * len(layer.weight_shape)
    shape[layer.channel_axis] = -1
    return shape


def dequantize(codes: np.ndarray, scales: np.ndarray, layer: QuantizableLayer) -> np.ndarray:
    return (codes.astype(np.float32) * scales.reshape(channel_shape(layer))).astype(np.float32)


def nearest(weight: np.ndarray, scales: np.ndarray, bits: int,
            layer: QuantizableLayer) -> np.ndarray:
    qmax = 2 ** (bits - 1) - 1
    return np.clip(np.round(weight / scales.reshape(channel_shape(layer))), -qmax, qmax)


def run(layer: ort.InferenceSession, x: np.ndarray, w: np.ndarray,
        b: np.ndarray | None = None) -> np.ndarray:
    feeds = {"x": x, "w": w.astype(np.float32)}
    if b is not None:
        feeds["b"] = b.astype(np.float32)
    return np.asarray(layer.run(None, feeds)[0], dtype=np.float64)


def output_error(layer: ort.InferenceSession, x: np.ndarray, w_hat: np.ndarray,
                 w: np.ndarray) -> float:
    """``sum (layer(x, w_hat) - layer(x, w))^2`` over the data, as ``sum layer(x, w_hat - w)^2``
    with the bias left out (the same number, without float32 cancellation)."""
    delta = w_hat.astype(np.float64) - w.astype(np.float64)
    return float((run(layer, x, delta) ** 2).sum())


def rounded_table(setup_: Setup, x: np.ndarray, cal: Calibration, bits: list[int], *,
                  method: str, bias_correction: bool) -> RoundedTable:
    return round_model(setup_.model, dict.fromkeys(setup_.layers, bits), batches(x),
                       weight=cal.weight_array, scales=cal.weight_scales,
                       settings=RoundingSettings(method=method, bias_correction=bias_correction),
                       runtime=RUNTIME)


# ---------------------------------------------------------------------------------------------
# 1. Never worse than nearest on the layer's output, for every layer kind.


@settings(max_examples=20, deadline=None)
@given(bits=st.integers(2, 8), method=st.sampled_from(["gptq", "adaround"]),
       seed=st.integers(0, 2**16))
def test_rounded_codes_never_increase_any_layers_output_error(bits: int, method: str,
                                                              seed: int) -> None:
    s = setup()
    x = calibration_data(seed)
    cal = calibrate(s.model, x)
    table = rounded_table(s, x, cal, [bits], method=method, bias_correction=False)
    assert set(table) == {(name, bits) for name in s.layers}
    inputs = s.layer_inputs(x)
    qmax = 2 ** (bits - 1) - 1
    for name, layer in s.layers.items():
        w = cal.weight_array(layer)
        np.testing.assert_array_equal(w, s.weight(layer.weight))
        layout = layer_layout(s.model, layer)
        assert layout is not None
        np.testing.assert_array_equal(layout.original(layout.canonical(w), w.shape), w)

        rounded = table[(name, bits)]
        assert rounded.bias_shift is None
        codes = rounded.codes
        assert codes.shape == w.shape and codes.dtype == np.int8
        assert codes.min() >= -qmax and codes.max() <= qmax

        scales = cal.weight_scales(layer, bits)
        ours = output_error(s.plain[name], inputs[name], dequantize(codes, scales, layer), w)
        near = output_error(s.plain[name], inputs[name],
                            dequantize(nearest(w, scales, bits, layer), scales, layer), w)
        assert ours <= near * (1 + 1e-6), (name, ours, near)


def test_gptq_lowers_the_output_error_of_every_layer_kind_at_3_bits() -> None:
    """The property above must not hold only because the stage returns nearest codes."""
    s = setup()
    x = calibration_data(0)
    cal = calibrate(s.model, x)
    table = rounded_table(s, x, cal, [3], method="gptq", bias_correction=False)
    inputs = s.layer_inputs(x)
    for name, layer in s.layers.items():
        w, scales = cal.weight_array(layer), cal.weight_scales(layer, 3)
        ours = output_error(s.plain[name], inputs[name],
                            dequantize(table[(name, 3)].codes, scales, layer), w)
        near = output_error(s.plain[name], inputs[name],
                            dequantize(nearest(w, scales, 3, layer), scales, layer), w)
        assert ours < 0.99 * near, (name, ours, near)


# ---------------------------------------------------------------------------------------------
# 2. Bias correction keeps each channel's mean output.


@pytest.mark.parametrize("method", ["nearest", "gptq"])
def test_bias_correction_restores_the_fp32_mean_output_per_channel(method: str) -> None:
    s = setup()
    x = calibration_data(1)
    cal = calibrate(s.model, x)
    table = rounded_table(s, x, cal, [3], method=method, bias_correction=True)
    assert table[("mm", 3)].bias_shift is None  # no bias, nothing to correct
    inputs = s.layer_inputs(x)
    for name in ("conv", "dw", "fc"):
        layer = s.layers[name]
        assert layer.bias is not None
        w, b = s.weight(layer.weight), s.weight(layer.bias)
        rounded = table[(name, 3)]
        assert rounded.bias_shift is not None and rounded.bias_shift.shape == b.shape
        w_hat = dequantize(rounded.codes, cal.weight_scales(layer, 3), layer)
        axes = tuple(i for i in range(4 if layer.op_type == "Conv" else 2) if i != 1)
        fp32 = run(s.biased[name], inputs[name], w, b).mean(axis=axes)
        corrected = run(s.biased[name], inputs[name], w_hat, b + rounded.bias_shift).mean(axes)
        uncorrected = run(s.biased[name], inputs[name], w_hat, b).mean(axis=axes)
        scale = float(np.abs(fp32).max())
        error, before = np.abs(corrected - fp32).max(), np.abs(uncorrected - fp32).max()
        assert error <= 1e-4 * scale, (name, error, scale)
        assert before >= 1e-3 * scale and before >= 100 * error, (name, before, error)


# ---------------------------------------------------------------------------------------------
# 3. The disk cache.


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """(model, data, cache folder): conv_chain, 48 samples (the last 12 calibrate)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SMPQ_CACHE_DIR", str(cache))
    model = tmp_path / "chain.onnx"
    onnx.save(conv_chain(), str(model))
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(3).normal(size=(48, 3, 8, 8)).astype(np.float32))
    return model, data, cache


def context(tiny: tuple[Path, Path, Path], rounding: RoundingSettings) -> QuantizationContext:
    model, data, _ = tiny
    return build_context(model, hw="flexible", data=data, runtime=RUNTIME, rounding=rounding)


def table_of(ctx: QuantizationContext) -> dict[tuple[str, int], tuple[np.ndarray, Any]]:
    cal = ctx.calibration
    return {(layer.name, bits): (cal.weight_codes(layer, bits), cal.bias_shift(layer, bits))
            for layer in ctx.model.layers for bits in ALL_BITS}


def assert_same_table(a: QuantizationContext, b: QuantizationContext) -> None:
    first, second = table_of(a), table_of(b)
    assert first.keys() == second.keys()
    for key, (codes, shift) in first.items():
        np.testing.assert_array_equal(second[key][0], codes, err_msg=str(key))
        if shift is None:
            assert second[key][1] is None, key
        else:
            np.testing.assert_array_equal(second[key][1], shift, err_msg=str(key))


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch round_model to count its calls (still computing)."""
    calls: list[int] = []
    real: Callable[..., RoundedTable] = weight_rounding.round_model

    def wrapper(*args: Any, **kwargs: Any) -> RoundedTable:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(weight_rounding, "round_model", wrapper)
    return calls


def refuse(*args: Any, **kwargs: Any) -> RoundedTable:
    raise AssertionError("round_model ran although its table is cached")


GPTQ_BC = RoundingSettings(method="gptq", bias_correction=True)


def test_a_second_context_reads_the_table_from_the_cache(
        tiny: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tiny[2]
    first = context(tiny, GPTQ_BC)
    assert first.rounding_cached is False and first.rounding_s > 0
    assert len(list(cache.glob("rounding-*.npz"))) == 1
    assert all(first.calibration.bias_shift(layer, 3) is not None
               for layer in first.model.layers if layer.bias is not None)

    with monkeypatch.context() as patch:
        patch.setattr(weight_rounding, "round_model", refuse)
        second = context(tiny, GPTQ_BC)
    assert second.rounding_cached is True and second.rounding_s == 0.0
    assert_same_table(first, second)

    calls = counting(monkeypatch)
    for changed in (RoundingSettings(method="gptq", bias_correction=False),
                    RoundingSettings(method="adaround", bias_correction=True),
                    RoundingSettings(method="gptq", bias_correction=True, samples=6)):
        before = len(calls)
        other = context(tiny, changed)
        assert other.rounding_cached is False and len(calls) == before + 1, changed
    assert len(list(cache.glob("rounding-*.npz"))) == 4
    # Bias correction changes only the biases, not the codes.
    no_bc = context(tiny, RoundingSettings(method="gptq", bias_correction=False))
    assert no_bc.rounding_cached is True
    for layer in first.model.layers:
        for bits in ALL_BITS:
            np.testing.assert_array_equal(no_bc.calibration.weight_codes(layer, bits),
                                          first.calibration.weight_codes(layer, bits))
            assert no_bc.calibration.bias_shift(layer, bits) is None


@pytest.mark.parametrize("damage", [
    "garbage",
    "empty",
    "truncated",
])
def test_a_corrupt_cache_file_is_recomputed(tiny: tuple[Path, Path, Path],
                                            monkeypatch: pytest.MonkeyPatch,
                                            damage: str) -> None:
    cache = tiny[2]
    first = context(tiny, GPTQ_BC)
    (path,) = cache.glob("rounding-*.npz")
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"\x93NOT AN NPZ\x00" * 64, "empty": b"",
                      "truncated": raw[:len(raw) // 2]}[damage])
    calls = counting(monkeypatch)
    again = context(tiny, GPTQ_BC)
    assert again.rounding_cached is False and calls == [1]
    assert_same_table(first, again)
    assert len(load_table(path)) == len(first.space.layers) * len(ALL_BITS)  # rewritten


# ---------------------------------------------------------------------------------------------
# 4. The emitted model ships the rounded codes and still reproduces the evaluator.


def initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def quantized(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: array for name, array in arrays.items() if name.endswith("_quantized")}


@pytest.mark.parametrize("bits", ["W4A8", "W3A4"])
def test_the_emitted_model_ships_the_rounded_codes(tiny: tuple[Path, Path, Path],
                                                   tmp_path: Path, bits: str) -> None:
    model, data, cache = tiny
    w_bits = Option.parse(bits).w_bits

    def apply(out: str, rounding: str, bias_correction: bool) -> smpq_onnx.ApplyResult:
        return smpq_onnx.apply(model, out=tmp_path / out, bits=bits, data=data,
                               rounding=rounding, bias_correction=bias_correction,
                               provider="cpu", threads=1)

    rounded = apply("rounded.onnx", "gptq", True)
    check = rounded.check
    assert check is not None and check.match and check.emitted == check.deployed
    near = apply("nearest.onnx", "nearest", False)
    assert near.check is not None and near.check.match

    emitted = initializers(rounded.out)
    shipped, nearest_shipped = quantized(emitted), quantized(initializers(near.out))
    assert shipped.keys() == nearest_shipped.keys()
    (table_path,) = cache.glob("rounding-*.npz")
    table = load_table(table_path)
    qmax = 2 ** (w_bits - 1) - 1
    weights_differ, biases_differ = [], []
    for layer in import_model(model).layers:
        name = f"{layer.weight}_smpq_w{w_bits}_quantized"
        codes = shipped[name]
        np.testing.assert_array_equal(codes, table[(layer.name, w_bits)].codes)
        assert np.abs(codes.astype(np.int32)).max() <= qmax
        weights_differ.append(not np.array_equal(codes, nearest_shipped[name]))
        if layer.bias is None:
            continue
        prefix = f"{layer.bias}_smpq_b{w_bits}x{Option.parse(bits).a_bits}"
        shift = table[(layer.name, w_bits)].bias_shift
        assert shift is not None
        corrected = (numpy_helper.to_array(next(
            init for init in onnx.load(str(model)).graph.initializer if init.name == layer.bias))
            + shift).astype(np.float32)
        step = emitted[f"{prefix}_scale"].astype(np.float64)
        np.testing.assert_array_equal(emitted[f"{prefix}_quantized"],
                                      np.round(corrected.astype(np.float64) / step))
        biases_differ.append(not np.array_equal(shipped[f"{prefix}_quantized"],
                                                nearest_shipped[f"{prefix}_quantized"]))
    assert any(weights_differ), "every shipped weight has the nearest codes"
    assert biases_differ
    if bits == "W4A8":  # at W3A4 every shift is below half a bias step (measured)
        assert any(biases_differ), "no shipped bias carries its correction"


# ---------------------------------------------------------------------------------------------
# 5. The fake-quant engine uses the rounded codes.


def test_fake_quant_weights_are_the_rounded_codes_times_the_scales(
        tiny: tuple[Path, Path, Path]) -> None:
    ctx = context(tiny, RoundingSettings(method="gptq", bias_correction=False))
    near = context(tiny, RoundingSettings(method="nearest", bias_correction=False))
    cal, near_cal = ctx.calibration, near.calibration
    policy = ctx.space.uniform(Option(3, 8))
    in_graph = {init.name: numpy_helper.to_array(init)
                for init in ctx.evaluator.eval_model(policy).graph.initializer}
    differ = []
    for layer in ctx.model.layers:
        scales = cal.weight_scales(layer, 3)
        np.testing.assert_array_equal(scales, near_cal.weight_scales(layer, 3))
        fake = cal.weight(layer, 3)
        np.testing.assert_array_equal(fake, dequantize(cal.weight_codes(layer, 3), scales,
                                                       layer))
        np.testing.assert_array_equal(in_graph[layer.weight], fake)
        np.testing.assert_array_equal(
            near_cal.weight(layer, 3),
            dequantize(nearest(cal.weight_array(layer), scales, 3, layer), scales, layer))
        differ.append(not np.array_equal(fake, near_cal.weight(layer, 3)))
    assert any(differ), "the rounded fake-quant weights equal nearest's for every layer"


# ---------------------------------------------------------------------------------------------
# 6. Edge cases: shared weights, Gemm alpha/beta, a model whose only layer reads the graph input.

def _gemm_model(*, alpha: float, beta: float) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    inits = {"w": rng.normal(size=(5, 16)).astype(np.float32),
             "b": rng.normal(size=(5,)).astype(np.float32)}
    node = onnx.helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1,
                                 alpha=alpha, beta=beta)
    return make_model([node], [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                  ["N", 16])],
                      [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                      inits)


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (2.0, 0.5)])
def test_bias_correction_of_a_gemm_with_alpha_and_beta_restores_the_mean(
        alpha: float, beta: float) -> None:
    proto = _gemm_model(alpha=alpha, beta=beta)
    model = import_model(proto)
    x = (np.random.default_rng(6).normal(size=(256, 16)) + 1.0).astype(np.float32)
    cal = Calibration(model, {}, CalibrationSettings())
    table = round_model(model, {"fc": [3]}, [{"x": x}], weight=cal.weight_array,
                        scales=cal.weight_scales,
                        settings=RoundingSettings(method="gptq", bias_correction=True),
                        runtime=RUNTIME)
    layer = model.layers[0]
    w_hat = dequantize(table[("fc", 3)].codes, cal.weight_scales(layer, 3), layer)
    shift = table[("fc", 3)].bias_shift
    assert shift is not None
    w = cal.weight_array(layer)
    b = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "b"))
    fp32 = alpha * x @ w.T + beta * b
    corrected = alpha * x @ w_hat.T + beta * (b + shift)
    uncorrected = alpha * x @ w_hat.T + beta * b
    error = np.abs(corrected.mean(0) - fp32.mean(0)).max()
    assert error < 1e-4 * np.abs(fp32.mean(0)).max()
    assert np.abs(uncorrected.mean(0) - fp32.mean(0)).max() > 100 * error


def test_a_weight_shared_by_two_layers_keeps_nearest_codes_in_evaluator_and_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMPQ_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(7)
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             onnx.helper.make_node("Conv", ["r1", "w"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    proto = make_model(nodes, [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                  ["N", 4, 6, 6])],
                       [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                          ["N", 4, 6, 6])],
                       {"w": rng.normal(size=(4, 4, 3, 3)).astype(np.float32)})
    onnx.save(proto, str(tmp_path / "shared.onnx"))
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(48, 4, 6, 6)).astype(np.float32))
    result = smpq_onnx.apply(tmp_path / "shared.onnx", out=tmp_path / "m.onnx", bits="W3A8",
                             data=tmp_path / "data.npz", rounding="gptq",
                             bias_correction=True, provider="cpu")
    assert result.check is not None and result.check.match
    assert result.check.evaluator == pytest.approx(result.check.deployed)


def test_a_model_whose_only_layer_reads_the_graph_input_is_rounded() -> None:
    model = import_model(_gemm_model(alpha=1.0, beta=1.0))
    x = np.random.default_rng(8).normal(size=(64, 16)).astype(np.float32)
    cal = Calibration(model, {}, CalibrationSettings())
    table = round_model(model, {"fc": [4]}, [{"x": x}], weight=cal.weight_array,
                        scales=cal.weight_scales, settings=RoundingSettings(method="gptq"),
                        runtime=RUNTIME)
    assert set(table) == {("fc", 4)}


def test_per_tensor_weights_are_rounded_and_the_emitted_model_reproduces_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile with one weight scale per tensor: GPTQ keeps that scale and still ships."""
    monkeypatch.setenv("SMPQ_CACHE_DIR", str(tmp_path / "cache"))
    profile = Path(__file__).parents[2] / "hw_profiles" / "flexible.yaml"
    text = profile.read_text().replace("name: flexible", "name: per-tensor", 1)
    text = text.replace("weight_quantization:\n  granularity: per_channel",
                        "weight_quantization:\n  granularity: per_tensor")
    assert "granularity: per_tensor\n  symmetric: true" in text
    (tmp_path / "per_tensor.yaml").write_text(text)
    onnx.save(conv_chain(), str(tmp_path / "chain.onnx"))
    np.savez(tmp_path / "data.npz",
             x=np.random.default_rng(9).normal(size=(48, 3, 8, 8)).astype(np.float32))
    common = {"out": tmp_path / "m.onnx", "bits": "W3A8", "data": tmp_path / "data.npz",
              "hw": str(tmp_path / "per_tensor.yaml"), "provider": "cpu"}
    rounded = smpq_onnx.apply(tmp_path / "chain.onnx", rounding="gptq", **common)
    assert rounded.check is not None and rounded.check.match
    codes = quantized(initializers(tmp_path / "m.onnx"))
    nearest_run = smpq_onnx.apply(tmp_path / "chain.onnx", rounding="nearest",
                                  bias_correction=False, **common)
    assert nearest_run.check is not None and nearest_run.check.match
    plain = quantized(initializers(tmp_path / "m.onnx"))
    assert any(not np.array_equal(codes[k], plain[k]) for k in codes)
