"""Opsets 7..10 are upgraded to 13 on load; older ones, and models the converter cannot
upgrade, are refused with one line that names the fix (or the node that blocks it)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import old_opset_cnn, run_ort
from onnx import TensorProto, helper

from smpq_onnx.errors import UnsupportedModelError
from smpq_onnx.model.importer import import_model
from smpq_onnx.model.loading import UPGRADE_OPSET, supported_model


@pytest.mark.parametrize("opset", [7, 8, 9, 10])
def test_old_opsets_are_upgraded_to_13_with_the_same_outputs(opset: int) -> None:
    original = old_opset_cnn(opset)
    upgraded = supported_model(original, source="old.onnx")
    assert upgraded.opset_import[0].version == UPGRADE_OPSET == 13
    assert upgraded.ir_version >= helper.find_min_ir_version_for(list(upgraded.opset_import))
    onnx.checker.check_model(upgraded)
    ops = {node.op_type for node in upgraded.graph.node}
    assert "Upsample" not in ops and "Resize" in ops
    x = np.random.default_rng(opset).normal(size=(3, 3, 16, 16)).astype(np.float32)
    # ONNX Runtime runs both alike (opset-13 Softmax kernels differ in the last bits).
    np.testing.assert_allclose(run_ort(upgraded, {"x": x})[0], run_ort(original, {"x": x})[0],
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("opset", [7, 9, 10])
def test_an_upgraded_model_is_imported_like_a_new_one(opset: int) -> None:
    model = import_model(old_opset_cnn(opset))
    assert [(layer.name, layer.op_type) for layer in model.layers] == [
        ("conv1", "Conv"), ("conv2", "Conv"), ("fc", "Gemm")]
    assert not any(node.op_type == "BatchNormalization" for node in model.ir_model.graph)
    assert model.ir_model.opset_imports[""] == 13
    # Initializers that IR 3 listed as inputs are constants: the only input is the image.
    assert [value.name for value in model.ir_model.graph.inputs] == ["x"]
    assert model.ir_model.graph.inputs[0].shape[0] == ir.SymbolicDim("N")
    assert model.input_shapes == {"x": (1, 3, 16, 16)}


def test_the_upgrade_is_logged_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="smpq_onnx.model.loading"):
        supported_model(old_opset_cnn(9), source="net.onnx")
    lines = [r.getMessage() for r in caplog.records if r.name == "smpq_onnx.model.loading"]
    assert lines == ["upgraded opset 9 -> 13 with onnx.version_converter (net.onnx)"]


def test_models_at_opset_11_and_newer_are_left_alone() -> None:
    model = old_opset_cnn(10)
    model.opset_import[0].version = 11
    model.graph.node[4].input.insert(1, "")  # Resize-11 takes (X, roi, scales)
    assert supported_model(model, source="m") is model


def test_an_opset_older_than_7_is_refused_with_one_line() -> None:
    model = old_opset_cnn(7)
    model.opset_import[0].version = 6
    with pytest.raises(UnsupportedModelError) as caught:
        supported_model(model, source="ancient.onnx")
    message = str(caught.value)
    assert "\n" not in message
    assert "ancient.onnx uses opset 6, older than 7" in message
    assert "re-export the model at opset 13 or newer" in message


def test_a_conversion_failure_names_the_node_that_blocks_it() -> None:
    # BatchNormalization with spatial=0 (per-activation statistics) has no opset-9 form.
    model = old_opset_cnn(7)
    stats = [f"bn_{k}" for k in ("scale", "bias", "mean", "var")]
    for init in model.graph.initializer:
        if init.name in stats:
            init.CopyFrom(onnx.numpy_helper.from_array(
                np.ones((4, 16, 16), np.float32), init.name))
    for value in model.graph.input:
        if value.name in stats:
            value.CopyFrom(helper.make_tensor_value_info(value.name, TensorProto.FLOAT,
                                                         [4, 16, 16]))
    bn = next(node for node in model.graph.node if node.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("spatial", 0))
    onnx.checker.check_model(model)
    with pytest.raises(UnsupportedModelError) as caught:
        import_model(model, label="bn.onnx")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("bn.onnx: onnx.version_converter cannot upgrade it from "
                              "opset 7 to 13: node 'bn1' (BatchNormalization) blocks it")
    assert "spatial must have value 1" in message
