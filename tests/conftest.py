"""Small models built in the tests (onnx.helper), shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
               outputs: list[onnx.ValueInfoProto], initializers: dict[str, np.ndarray],
               *, opset: int = 17, ir_version: int | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "test", inputs, outputs,
        [numpy_helper.from_array(a.astype(a.dtype), name) for name, a in initializers.items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version or max(helper.find_min_ir_version_for(opsets), 7)
    return model


def conv_chain(*, opset: int = 17, batch: str | int = "N", seed: int = 0) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(3->4, 3x3, pad 1) -> Relu -> Conv(4->6, 1x1) -> Flatten -> Gemm(->5)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=(4,)).astype(np.float32),
        "w2": rng.normal(size=(6, 4, 1, 1)).astype(np.float32),
        "w3": rng.normal(size=(384, 5)).astype(np.float32),
        "b3": rng.normal(size=(5,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        inits, opset=opset,
    )


@pytest.fixture
def conv_chain_path(tmp_path: Path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain(), str(path))
    return path


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def old_opset_cnn(opset: int, *, seed: int = 0) -> onnx.ModelProto:
    """An opset 7..10 model as old exporters wrote them (IR 3 lists initializers as inputs).

    x[N,3,16,16] -> Conv(3->4) -> BatchNormalization -> Relu -> MaxPool(2) -> Upsample(x2)
    (Resize at opset 10) -> Concat with the Relu -> Conv(8->4, 1x1) -> Dropout -> Flatten ->
    Reshape -> Gemm(->5) -> Softmax.
    """
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=(4,)).astype(np.float32),
        "bn_scale": rng.uniform(0.5, 1.5, size=(4,)).astype(np.float32),
        "bn_bias": rng.normal(size=(4,)).astype(np.float32),
        "bn_mean": rng.normal(scale=0.1, size=(4,)).astype(np.float32),
        "bn_var": rng.uniform(0.5, 1.5, size=(4,)).astype(np.float32),
        "w2": rng.normal(size=(4, 8, 1, 1)).astype(np.float32),
        "shape": np.array([0, -1], np.int64),
        "w3": rng.normal(scale=0.1, size=(5, 4 * 16 * 16)).astype(np.float32),
        "b3": rng.normal(size=(5,)).astype(np.float32),
    }
    if opset >= 9:
        inits["scales"] = np.array([1, 1, 2, 2], np.float32)
    upsample = (helper.make_node("Upsample", ["p1"], ["u1"], name="up", mode="nearest",
                                 scales=[1.0, 1.0, 2.0, 2.0]) if opset < 9 else
                helper.make_node("Upsample" if opset == 9 else "Resize", ["p1", "scales"],
                                 ["u1"], name="up", mode="nearest"))
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean",
                                                "bn_var"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        upsample,
        helper.make_node("Concat", ["u1", "r1"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w2"], ["c2"], name="conv2"),
        helper.make_node("Dropout", ["c2"], ["d2"], name="drop"),
        helper.make_node("Flatten", ["d2"], ["f"], name="flat"),
        helper.make_node("Reshape", ["f", "shape"], ["f2"], name="reshape"),
        helper.make_node("Gemm", ["f2", "w3", "b3"], ["g"], name="fc", transB=1),
        helper.make_node("Softmax", ["g"], ["y"], name="softmax"),
    ]
    opsets = [helper.make_opsetid("", opset)]
    ir_version = helper.find_min_ir_version_for(opsets)
    weights = [numpy_helper.from_array(a, name) for name, a in inits.items()]
    listed = [helper.make_tensor_value_info(t.name, t.data_type, t.dims)
              for t in weights] if ir_version < 4 else []
    graph = helper.make_graph(
        nodes, f"opset{opset}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16]), *listed],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], weights)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    return model


def dynamic_cnn(*, batch: str | int = "N", height: str | int = "H", width: str | int = "W",
                seed: int = 0) -> onnx.ModelProto:
    """x[batch,3,height,width] -> Conv(3->4, 3x3, pad 1) -> Relu -> Conv(4->6, 1x1) ->
    GlobalAveragePool -> Flatten -> Gemm(->5): any image size runs."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=(4,)).astype(np.float32),
        "w2": rng.normal(size=(6, 4, 1, 1)).astype(np.float32),
        "w3": rng.normal(size=(6, 5)).astype(np.float32),
        "b3": rng.normal(size=(5,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        inits)
