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
