"""Import: opsets, symbolic batch, external data, Constant weights, subgraphs, names, BN folding.

Opsets 7..10 (upgraded on load): test_old_opsets.py; fixing symbolic sizes: test_input_shapes.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import conv_chain, make_model, run_ort
from onnx import TensorProto, helper

from smpq_onnx.errors import ModelLoadError, UnsupportedModelError
from smpq_onnx.model.importer import import_model


@pytest.mark.parametrize("opset", [11, 13, 17, 21, 26])
def test_imports_every_supported_opset(opset: int) -> None:
    model = import_model(conv_chain(opset=opset))
    assert [(layer.name, layer.op_type) for layer in model.layers] == [
        ("conv1", "Conv"), ("conv2", "Conv"), ("fc", "Gemm")]


def test_symbolic_batch_is_fixed_to_one_for_costs() -> None:
    model = import_model(conv_chain(batch="batch_size"))
    conv1, conv2, fc = model.layers
    assert conv1.output_shape == (1, 4, 8, 8)
    assert conv1.macs == 4 * 8 * 8 * 3 * 3 * 3
    assert conv2.macs == 6 * 8 * 8 * 4
    assert fc.macs == 5 * 384
    # The model itself keeps its symbolic batch dimension.
    assert model.ir_model.graph.inputs[0].shape[0] == ir.SymbolicDim("batch_size")


def test_symbolic_non_batch_dimension_without_a_shape_names_the_input_shape_fix() -> None:
    proto = conv_chain()
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(UnsupportedModelError,
                       match="symbolic dimension 'H' at axis 2.*--input-shape x=1x3xHx8"):
        import_model(proto)


def test_external_data_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    proto = conv_chain()
    onnx.save_model(proto, str(path), save_as_external_data=True, location="ext.onnx.data")
    assert (tmp_path / "ext.onnx.data").is_file()
    model = import_model(path)
    fc = model.ir_model.graph.initializers["w3"].const_value
    assert fc is not None
    expected = onnx.numpy_helper.to_array(conv_chain().graph.initializer[3])
    np.testing.assert_array_equal(fc.numpy(), expected)


def test_missing_external_data_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save_model(conv_chain(), str(path), save_as_external_data=True, location="w.data")
    (tmp_path / "w.data").unlink()
    with pytest.raises(ModelLoadError, match="external weight data"):
        import_model(path)


def test_weights_in_constant_nodes_are_found() -> None:
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(weight)),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], {})
    (layer,) = import_model(proto).layers
    assert layer.weight_shape == (4, 3, 3, 3)
    assert layer.macs == 4 * 3 * 3 * 3 * 3 * 3


def test_duplicate_and_empty_node_names_become_unique() -> None:
    proto = conv_chain()
    proto.graph.node[0].name = "dup"
    proto.graph.node[2].name = "dup"
    proto.graph.node[4].name = ""
    model = import_model(proto)
    names = [node.name for node in model.ir_model.graph]
    assert len(set(names)) == len(names) and all(names)
    assert len(model.layers) == 3
    # ORT refuses duplicate names; the canonical model loads.
    x = np.zeros((1, 3, 8, 8), np.float32)
    run_ort(ir.to_proto(model.ir_model), {"x": x})


def _if_model() -> onnx.ModelProto:
    """x -> Conv -> c; If(cond) { then: c @ Wt (a MatMul inside the body), else: Identity(c) }."""
    rng = np.random.default_rng(2)
    then_w = onnx.numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), "wt")
    then_graph = helper.make_graph(
        [helper.make_node("Constant", [], ["wt_c"], value=then_w),
         helper.make_node("MatMul", ["c", "wt_c"], ["t_out"], name="inner_matmul")],
        "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["e_out"], name="inner_id")],
        "else", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_graph,
                         else_branch=else_graph),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": rng.normal(size=(3, 2, 1, 1)).astype(np.float32)},
    )


def test_if_subgraph_is_analysed_and_inner_layers_stay_float() -> None:
    model = import_model(_if_model())
    assert [layer.name for layer in model.layers] == ["conv"]
    assert model.float_subgraph_layers == ("inner_matmul (MatMul)",)
    # The implicit read of "c" by the If body is an explicit captured edge.
    captured = [d for _, v, d in model.view.in_edges("branch", data=True) if d["captured"]]
    assert [d["tensor"] for d in captured] == ["c"]
    assert model.schedule.index("conv") < model.schedule.index("branch")


def test_matmul_weight_on_either_side_and_activation_matmul_skipped() -> None:
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("MatMul", ["x", "wr"], ["a"], name="right"),      # [2,7]@[7,5]
        helper.make_node("MatMul", ["wl", "a"], ["b"], name="left"),       # [3,2]@[2,5]
        helper.make_node("Transpose", ["b"], ["bt"], name="t"),            # [5,3]
        helper.make_node("MatMul", ["b", "bt"], ["y"], name="act_act"),    # [3,5]@[5,3]
    ]
    proto = make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"wr": rng.normal(size=(7, 5)).astype(np.float32),
         "wl": rng.normal(size=(3, 2)).astype(np.float32)})
    layers = {layer.name: layer for layer in import_model(proto).layers}
    assert set(layers) == {"right", "left"}
    assert layers["right"].macs == 2 * 5 * 7 and layers["right"].channel_axis == 1
    assert layers["left"].macs == 3 * 5 * 2 and layers["left"].activation == "a"
    assert layers["left"].channel_axis == 0


def _with_batchnorm(layer_node: onnx.NodeProto, channels: int, rank: int,
                    inits: dict[str, np.ndarray], x_shape: list[int]) -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    inits = dict(inits)
    inits.update({
        "gamma": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "beta": rng.normal(size=channels).astype(np.float32),
        "mean": rng.normal(size=channels).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, channels).astype(np.float32),
    })
    nodes = [layer_node,
             helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["y"],
                              name="bn", epsilon=1e-3)]
    out_shape = [f"d{i}" for i in range(rank)]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)


BN_CASES = {
    "conv": (helper.make_node("Conv", ["x", "w"], ["h"], name="layer", group=2), 6,
             {"w": (6, 2, 3, 3)}, [2, 4, 6, 6]),
    "conv_transpose_grouped": (
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["h"], name="layer", group=2,
                         strides=[2, 2]),
        6, {"w": (4, 3, 2, 2), "b": (6,)}, [2, 4, 5, 5]),
    "gemm_transB": (helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="layer", transB=1), 5,
                    {"w": (5, 7), "b": (5,)}, [3, 7]),
}


@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_batchnorm_is_folded_with_identical_outputs(case: str) -> None:
    node, channels, shapes, x_shape = BN_CASES[case]
    rng = np.random.default_rng(5)
    inits = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    proto = _with_batchnorm(node, channels, len(x_shape), inits, x_shape)
    x = rng.normal(size=x_shape).astype(np.float32)
    (expected,) = run_ort(proto, {"x": x})

    model = import_model(proto)
    ops = [n.op_type for n in model.ir_model.graph]
    assert "BatchNormalization" not in ops
    assert model.ir_model.graph.outputs[0].name == "y"
    folded = ir.to_proto(model.ir_model)
    onnx.checker.check_model(folded)
    (actual,) = run_ort(folded, {"x": x})
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    assert model.layers[0].weight == "w"


def test_batchnorm_after_shared_weight_is_not_folded() -> None:
    rng = np.random.default_rng(6)
    w = rng.normal(size=(3, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], name="a"),
        helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["h2"], name="bn"),
        helper.make_node("Conv", ["h2", "w"], ["y"], name="b"),
    ]
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                       {"w": w, "g": 2 * ones, "b": zeros, "m": zeros, "v": ones})
    model = import_model(proto)
    assert "BatchNormalization" in [n.op_type for n in model.ir_model.graph]


BAD_MODELS = {
    "missing": ("missing.onnx", None, "model file not found"),
    "text": ("notes.onnx", b"this is not a model\n" * 10, "not .*ONNX model"),
    "empty": ("empty.onnx", b"", "not an ONNX model"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_unreadable_files_are_clear_errors(tmp_path: Path, case: str) -> None:
    name, content, message = BAD_MODELS[case]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        import_model(path)


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    data = conv_chain().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        import_model(path)


def test_quantized_model_is_rejected() -> None:
    proto = conv_chain()
    proto.graph.node.insert(0, helper.make_node("QuantizeLinear", ["x", "s"], ["xq"]))
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        import_model(proto)


def test_a_float64_model_is_rejected() -> None:
    w = np.ones((2, 3, 1, 1), np.float64)
    proto = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
                       [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 3, 2, 2])],
                       [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], {"w": w})
    with pytest.raises(UnsupportedModelError, match="DOUBLE weights.*FP32"):
        import_model(proto)


def test_model_without_layers_is_rejected() -> None:
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], {})
    with pytest.raises(UnsupportedModelError, match="no quantizable layer"):
        import_model(proto)


def test_loop_body_reading_outer_tensors_is_analysed() -> None:
    """Loop(trip=2) { acc = acc + MatMul(c, W) } over the output c of an outer Conv."""
    rng = np.random.default_rng(7)
    w_inner = onnx.numpy_helper.from_array(rng.normal(size=(3, 3)).astype(np.float32), "wi")
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["wi_c"], value=w_inner),
         helper.make_node("MatMul", ["c", "wi_c"], ["m"], name="inner_mm"),
         helper.make_node("Add", ["acc_in", "m"], ["acc_out"], name="acc"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Loop", ["trip", "", "init"], ["y"], name="loop", body=body),
    ]
    proto = make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": rng.normal(size=(3, 2, 1, 1)).astype(np.float32), "trip": np.array(2, np.int64),
         "init": np.zeros((1, 3, 3, 3), np.float32)})
    model = import_model(proto)
    assert [layer.name for layer in model.layers] == ["conv"]
    captured = [d["tensor"] for _, _, d in model.view.in_edges("loop", data=True) if d["captured"]]
    assert captured == ["c"]
    assert model.shapes["y"] == (1, 3, 3, 3)


def test_weights_built_by_constant_of_shape_are_folded_into_layers() -> None:
    """onnx's "light" zoo models fill their weights with ConstantOfShape at run time."""
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.02])
    nodes = [
        helper.make_node("ConstantOfShape", ["w_shape"], ["w"], name="fill_w", value=fill),
        helper.make_node("ConstantOfShape", ["b_shape"], ["b"], name="fill_b", value=fill),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"),
    ]
    proto = make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 2, 2])],
        {"w_shape": np.array([2, 3, 3, 3], np.int64), "b_shape": np.array([2], np.int64)})
    model = import_model(proto)
    assert [(la.name, la.weight_shape, la.bias) for la in model.layers] == [
        ("conv", (2, 3, 3, 3), "b")]
    assert not any(node.op_type == "ConstantOfShape" for node in model.ir_model.graph)
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(run_ort(ir.to_proto(model.ir_model), {"x": x})[0],
                               run_ort(proto, {"x": x})[0], rtol=1e-6)
