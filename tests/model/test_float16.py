"""FP16 models: analysed, calibrated and searched in float32 simulation; the emitted QDQ model
keeps the float16 inputs and outputs; costs count float16 constants at 2 bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_chain, run_ort
from onnx import TensorProto, helper, numpy_helper

import smpq_onnx
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.model.precision import to_float32
from smpq_onnx.strategy.space import SearchSpace


def half_chain() -> onnx.ModelProto:
    """conv_chain in float16, with a float16 Constant and a float32 island (Cast up, Relu,
    Cast down) as mixed-precision exporters write them."""
    model = conv_chain()
    graph = model.graph
    for i, init in enumerate(graph.initializer):
        graph.initializer[i].CopyFrom(numpy_helper.from_array(
            numpy_helper.to_array(init).astype(np.float16), init.name))
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    two = numpy_helper.from_array(np.array(0.5, np.float16), "half_t")
    extra = [helper.make_node("Constant", [], ["half"], value=two, name="half_const"),
             helper.make_node("Mul", ["r1", "half"], ["r1h"], name="scale"),
             helper.make_node("Cast", ["r1h"], ["r1f"], to=TensorProto.FLOAT, name="up"),
             helper.make_node("Relu", ["r1f"], ["r1r"], name="relu_fp32"),
             helper.make_node("Cast", ["r1r"], ["r1x"], to=TensorProto.FLOAT16, name="down")]
    nodes = list(graph.node)
    nodes[2].input[0] = "r1x"  # conv2 reads the island's output
    del graph.node[:]
    graph.node.extend([*nodes[:2], *extra, *nodes[2:]])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("half")
    path = folder / "half.onnx"
    onnx.save(half_chain(), str(path))
    data = folder / "data.npz"
    np.savez(data, x=np.random.default_rng(4).normal(size=(48, 3, 8, 8)).astype(np.float16))
    return path, data


def test_float16_becomes_float32_everywhere_and_is_recorded() -> None:
    converted, interface = to_float32(half_chain())
    assert interface.inputs == ("x",) and interface.outputs == ("y",)
    assert interface.constants == {"w1", "b1", "w2", "w3", "b3", "half"}
    assert all(t.data_type == TensorProto.FLOAT for t in converted.graph.initializer)
    casts = [n for n in converted.graph.node if n.op_type == "Cast"]
    assert {a.i for n in casts for a in n.attribute} == {TensorProto.FLOAT}
    const = next(n for n in converted.graph.node if n.op_type == "Constant")
    assert const.attribute[0].t.data_type == TensorProto.FLOAT
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float16)
    np.testing.assert_allclose(run_ort(converted, {"x": x.astype(np.float32)})[0],
                               run_ort(half_chain(), {"x": x})[0].astype(np.float32),
                               rtol=2e-2, atol=2e-2)
    plain = conv_chain()
    assert to_float32(plain)[0] is plain and not to_float32(plain)[1].any


def test_costs_count_float16_weights_at_two_bytes() -> None:
    half_model, full_model = import_model(half_chain()), import_model(conv_chain())
    assert [la.name for la in half_model.layers] == ["conv1", "conv2", "fc"]
    device = load_profile("flexible")
    for model, factor in ((half_model, 2), (full_model, 4)):
        space = SearchSpace.build(model, device)
        costs = CostModel(model, device)
        floats = space.uniform(smpq_onnx.Option.parse("FP32"))
        params = sum(la.weight_params for la in model.layers)
        biases = sum(la.bias_params for la in model.layers)
        assert costs.weight_bytes(floats) == params * factor + biases * 4 + (
            costs.other_constant_bytes)
    assert CostModel(half_model, device).other_constant_bytes == 2  # the 0.5 Constant


def test_a_float16_model_is_searched_and_emitted_with_its_float16_interface(
        half: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = half
    evaluated = smpq_onnx.evaluate(model, data=data, bits="W8A8", hw="flexible", provider="cpu")
    assert evaluated.fp32 == 1.0 and evaluated.deployed >= 0.9
    applied = smpq_onnx.apply(model, bits="W8A8", data=data, out=tmp_path / "q.onnx",
                              hw="flexible", provider="cpu")
    assert applied.check is not None and applied.check.match
    emitted = onnx.load(str(applied.out))
    assert [v.type.tensor_type.elem_type for v in (*emitted.graph.input, *emitted.graph.output)] \
        == [TensorProto.FLOAT16, TensorProto.FLOAT16]
    assert sum(n.op_type == "QuantizeLinear" for n in emitted.graph.node) >= 3
    x = np.random.default_rng(9).normal(size=(4, 3, 8, 8)).astype(np.float16)
    got, want = run_ort(emitted, {"x": x})[0], run_ort(half_chain(), {"x": x})[0]
    assert got.dtype == np.float16 and got.shape == want.shape == (4, 5)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.75


def test_float32_data_for_a_float16_model_is_rounded_to_float16(
        half: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = half
    x16 = np.load(data)["x"]
    wide = tmp_path / "wide.npz"
    rng = np.random.default_rng(2)
    # float32 values that round to the same float16 values give the same results.
    np.savez(wide, x=x16.astype(np.float32) + rng.uniform(-1e-4, 1e-4, x16.shape) * np.abs(
        x16.astype(np.float32)) * 1e-1)
    a = smpq_onnx.evaluate(model, data=data, bits="W4A4", hw="flexible", provider="cpu")
    b = smpq_onnx.evaluate(model, data=wide, bits="W4A4", hw="flexible", provider="cpu")
    assert a.quantized == b.quantized and a.deployed == b.deployed
