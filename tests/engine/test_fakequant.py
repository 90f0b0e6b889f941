"""Fake-quant numerics equal an independent numpy reference, at every ORT optimization level."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_model
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper

from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.model.importer import import_model
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.calibration import Calibration, CalibrationSettings, collect_histograms
from smpq_onnx.quant.options import FP32, Mixture, Option, shares_of
from smpq_onnx.quant.policy import Policy


def two_layer_model(opset: int = 17):
    """x[N,3,6,6] -> Conv(3->4, 3x3, pad 1, bias) -> Relu -> Conv(4->5, 1x1) -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=4).astype(np.float32),
        "w2": (rng.normal(size=(5, 4, 1, 1)) * np.array([1, 0.01, 3, 0, 1])[:, None, None, None]
               ).astype(np.float32),
        "w3": rng.normal(size=(180, 7)).astype(np.float32),
        "b3": rng.normal(size=7).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Flatten", ["c2"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc"),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])
    return make_model(nodes, [x_info],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7])], inits,
                      opset=opset), inits


# --- the reference, written independently of smpq_onnx.quant.quantizers ---------------------------

def ref_act(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    s = np.float32(scale)
    q = np.clip(np.round(x.astype(np.float32) / s) + zero_point, qmin, qmax)
    return ((q - zero_point) * s).astype(np.float64)


def ref_weight(w: np.ndarray, scales: np.ndarray, bits: int, axis: int) -> np.ndarray:
    limit = 2 ** (bits - 1) - 1
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scales.astype(np.float32).reshape(shape)
    return (np.clip(np.round(w / s), -limit, limit) * s).astype(np.float64)


def ref_conv(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, w.shape[2:], axis=(2, 3))  # N, C, H, W, kh, kw
    return np.einsum("nchwij,ocij->nohw", windows, w)


def layer_references(x: np.ndarray, inits: dict, evaluator: Evaluator, policy: Policy):
    """Each layer's output from the reference quantizers, fed ORT's own float inputs.

    Feeding every layer the tensors ORT computed keeps float32 accumulation-order differences
    of earlier layers from flipping a rounding decision in the comparison.
    """
    import onnx

    cal = evaluator.calibration
    layers = {layer.name: layer for layer in evaluator.model.layers}
    model = evaluator.eval_model(policy)
    fetch = ["c1", "r1", "c2", "f", "y"]
    for name in fetch[:-1]:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    got = dict(zip(fetch, evaluator.runtime.session(model).run(fetch, {"x": x}), strict=True))

    def act(tensor: str, value: np.ndarray, layer: str) -> np.ndarray:
        """A mixture's input is the share-weighted sum of its widths' fake-quant tensors."""
        total = np.zeros(value.shape)
        for bits, share in shares_of(policy[layer], "a"):
            if bits == 32:
                total += share * value.astype(np.float64)
                continue
            p = cal.activation(tensor, bits)
            total += share * ref_act(value, p.scale, p.zero_point, p.qmin, p.qmax)
        return total

    def weight(name: str, layer: str) -> np.ndarray:
        total = np.zeros(inits[name].shape)
        for bits, share in shares_of(policy[layer], "w"):
            if bits == 32:
                total += share * inits[name].astype(np.float64)
                continue
            total += share * ref_weight(inits[name], cal.weight_scales(layers[layer], bits),
                                        bits, layers[layer].channel_axis)
        return total

    def bias(name: str, layer: str, tensor: str) -> np.ndarray:
        """int32 codes at scale s_x * s_w when input and weight are both quantized (at one
        width: a mixture keeps the float bias)."""
        option = policy[layer]
        if 32 in (option.w_bits, option.a_bits) or isinstance(option, Mixture):
            return inits[name].astype(np.float64)
        s = (np.float32(cal.activation(tensor, option.a_bits).scale)
             * cal.weight_scales(layers[layer], option.w_bits).astype(np.float32))
        return (np.round(inits[name] / s) * s).astype(np.float64)

    expected = {
        "c1": ref_conv(act("x", x, "conv1"), weight("w1", "conv1"), 1)
        + bias("b1", "conv1", "x")[None, :, None, None],
        "c2": ref_conv(act("r1", got["r1"], "conv2"), weight("w2", "conv2"), 0),
        "y": act("f", got["f"], "fc") @ weight("w3", "fc") + bias("b3", "fc", "f"),
    }
    return {name: (got[name], value) for name, value in expected.items()}


def assert_layers_match(pairs: dict) -> None:
    for name, (actual, expected) in pairs.items():
        scale = max(np.abs(expected).max(), 1e-12)
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale, err_msg=name)


def make_evaluator(optimization: str, opset: int = 17) -> tuple[Evaluator, dict, np.ndarray]:
    proto, inits = two_layer_model(opset)
    model = import_model(proto)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3, 6, 6)).astype(np.float32)
    runtime = RuntimeConfig(provider="cpu", optimization=optimization)  # type: ignore[arg-type]
    hist = collect_histograms(model, [{"x": x[:20]}], [layer.activation for layer in model.layers],
                              runtime=runtime)
    calibration = Calibration(model, hist, CalibrationSettings())
    data = Dataset({"x": x[20:]}, None, "test")
    return Evaluator(model, calibration, data, BUILTIN_METRICS["sqnr"], runtime=runtime), inits, \
        x[20:]


@pytest.mark.parametrize("optimization", ["disable", "basic", "extended", "all"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8, 16])
def test_fake_quant_equals_numpy_reference(optimization: str, bits: int) -> None:
    evaluator, inits, x = make_evaluator(optimization)
    policy = Policy({"conv1": Option(bits, bits), "conv2": Option(bits, 8),
                     "fc": Option(8, bits)})
    assert_layers_match(layer_references(x, inits, evaluator, policy))
    np.testing.assert_array_equal(evaluator.outputs(policy),
                                  layer_references(x, inits, evaluator, policy)["y"][0])


def test_mixed_float_layers_and_old_opset_float_chain() -> None:
    evaluator, inits, x = make_evaluator("all", opset=11)
    policy = Policy({"conv1": Option(5, 3), "conv2": FP32, "fc": Option(32, 6)})
    assert_layers_match(layer_references(x, inits, evaluator, policy))


@pytest.mark.parametrize("optimization", ["basic", "all"])
def test_mixtures_equal_the_share_weighted_numpy_reference(optimization: str) -> None:
    """The paper's mix semantics: sum_b p_b Q_b(W) as weights, sum_b p_b Q_b(x) as input."""
    evaluator, inits, x = make_evaluator(optimization)
    policy = Policy({"conv1": Mixture.of({2: 0.2, 4: 0.3, 8: 0.5}, {3: 0.6, 6: 0.4}),
                     "conv2": Mixture.of({4: 1.0}, {2: 0.5, 8: 0.5}),
                     "fc": Mixture.of({3: 0.7, 5: 0.3}, {8: 1.0})})
    assert all(isinstance(option, Mixture) for option in policy.values())
    assert_layers_match(layer_references(x, inits, evaluator, policy))
    plain = policy.replace(conv1=Option(8, 6))
    assert evaluator.evaluate(policy).score != evaluator.evaluate(plain).score


def test_quantized_activation_is_bit_exact() -> None:
    """The fake-quantized tensor itself, fetched from the session, equals the reference."""
    import onnx

    from smpq_onnx.engine.fakequant import fake_quant_tensor_name

    evaluator, _, x = make_evaluator("all")
    for bits in (3, 8, 16):
        policy = Policy({"conv1": Option(8, bits), "conv2": FP32, "fc": FP32})
        model = evaluator.eval_model(policy)
        name = fake_quant_tensor_name("x", bits)
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        session = evaluator.runtime.session(model)
        (got,) = session.run([name], {"x": x})
        p = evaluator.calibration.activation("x", bits)
        np.testing.assert_array_equal(got, ref_act(x, p.scale, p.zero_point, p.qmin,
                                                   p.qmax).astype(np.float32))


def test_evaluations_are_memoized_and_deterministic() -> None:
    evaluator, _, _ = make_evaluator("all")
    policy = Policy({"conv1": Option(4, 4), "conv2": Option(3, 5), "fc": Option(8, 8)})
    first = evaluator.evaluate(policy)
    again = evaluator.evaluate(Policy(dict(policy)))
    assert again.cached and again.score == first.score and evaluator.n_evaluations == 1
    fresh, _, _ = make_evaluator("all")
    assert fresh.evaluate(policy).score == first.score
