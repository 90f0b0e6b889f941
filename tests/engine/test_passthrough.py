"""Operators of other domains (com.microsoft, ai.onnx.ml) and If bodies are carried through the
whole pipeline untouched; layers inside bodies stay float and are listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_ort
from onnx import TensorProto, helper, numpy_helper

import smpq_onnx


def _mixed_domain_model() -> onnx.ModelProto:
    """x -> Conv -> com.microsoft.Gelu -> Conv -> GAP -> Flatten -> Gemm -> ai.onnx.ml.Normalizer
    -> If(flag) {then: MatMul with a constant weight; else: Identity} -> y."""
    rng = np.random.default_rng(5)
    inner_w = numpy_helper.from_array(rng.normal(size=(6, 6)).astype(np.float32), "inner_w")
    # The body also reads an outer initializer and an outer Constant node's output that no
    # top-level node reads (as exported VAD models do).
    then_graph = helper.make_graph(
        [helper.make_node("Constant", [], ["inner_w_c"], value=inner_w),
         helper.make_node("MatMul", ["n", "inner_w_c"], ["t_mm"], name="inner_matmul"),
         helper.make_node("Add", ["t_mm", "outer_bias"], ["t_add"], name="inner_add"),
         helper.make_node("Mul", ["t_add", "outer_scale"], ["t_out"], name="inner_mul")],
        "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["n"], ["e_out"], name="inner_id")],
        "else", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    inits = {"w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32) * 0.5,
             "w2": rng.normal(size=(8, 4, 1, 1)).astype(np.float32) * 0.5,
             "w3": rng.normal(size=(8, 6)).astype(np.float32),
             "b3": rng.normal(size=(6,)).astype(np.float32),
             "outer_bias": rng.normal(size=(6,)).astype(np.float32)}
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "scale")
    nodes = [
        helper.make_node("Constant", [], ["outer_scale"], value=scale, name="outer_const"),
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Gelu", ["c1"], ["g"], name="ms_gelu", domain="com.microsoft"),
        helper.make_node("Conv", ["g", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["d"], name="fc"),
        helper.make_node("Normalizer", ["d"], ["n"], name="ml_norm", domain="ai.onnx.ml",
                         norm="L2"),
        helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then_graph,
                         else_branch=else_graph),
    ]
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        [numpy_helper.from_array(a, name) for name, a in inits.items()])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1),
              helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mixed")
    model = folder / "mixed.onnx"
    onnx.save(_mixed_domain_model(), str(model))
    data = folder / "data.npz"
    x = np.random.default_rng(6).normal(size=(40, 3, 8, 8)).astype(np.float32)
    np.savez(data, x=x, flag=np.array(True))
    return model, data


def test_profile_lists_the_float_layers_inside_the_if_body(mixed: tuple[Path, Path]) -> None:
    model, _ = mixed
    result = smpq_onnx.profile(model, hw="flexible", bits="W8A8")
    assert [layer["name"] for layer in result.layers] == ["conv1", "conv2", "fc"]
    assert result.float_subgraph_layers == ["inner_matmul (MatMul)"]
    assert result.to_json_dict()["float_subgraph_layers"] == ["inner_matmul (MatMul)"]


def test_the_emitted_model_keeps_other_domains_and_the_body_untouched(
        mixed: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = mixed
    applied = smpq_onnx.apply(model, bits="W8A8", data=data, out=tmp_path / "q.onnx",
                              hw="flexible", provider="cpu")
    assert applied.check is not None and applied.check.match
    emitted = onnx.load(str(applied.out))
    by_name = {node.name: node for node in emitted.graph.node}
    assert by_name["ms_gelu"].domain == "com.microsoft"
    assert by_name["ml_norm"].domain == "ai.onnx.ml"
    assert {(o.domain or "", o.version) for o in emitted.opset_import} >= {
        ("com.microsoft", 1), ("ai.onnx.ml", 3)}
    # The bodies stay float: the same ops, the inner weight's original values (import lifts
    # the body's Constant node to a body initializer, which is the same graph).
    bodies = {a.name: a.g for a in by_name["branch"].attribute}
    assert [n.op_type for n in bodies["then_branch"].node] == ["MatMul", "Add", "Mul"]
    assert [n.op_type for n in bodies["else_branch"].node] == ["Identity"]
    inner = numpy_helper.to_array(bodies["then_branch"].initializer[0])
    expected = numpy_helper.to_array(
        _mixed_domain_model().graph.node[-1].attribute[1].g.node[0].attribute[0].t)
    evaluated_true = smpq_onnx.evaluate(model, data=data, bits="W4A8", hw="flexible",
                                        provider="cpu")
    assert evaluated_true.n == 30
    np.testing.assert_array_equal(inner, expected)
    assert sum(n.op_type == "QuantizeLinear" for n in emitted.graph.node) >= 3
    # The QDQ model runs in ONNX Runtime and stays close to the FP32 one.
    x = np.random.default_rng(7).normal(size=(4, 3, 8, 8)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        got, want = run_ort(emitted, feeds)[0], run_ort(_mixed_domain_model(), feeds)[0]
        cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert got.shape == want.shape == (4, 6) and cosine.min() > 0.98
    evaluated = smpq_onnx.evaluate(model, data=data, bits="W8A8", hw="flexible", provider="cpu")
    assert evaluated.metric == "agreement" and evaluated.deployed >= 0.9
    assert json.loads(applied.encodings.read_text())
