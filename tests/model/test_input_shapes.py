"""Symbolic input sizes other than the batch are fixed by concrete shapes (--input-shape, or
the data's first sample); costs are per sample at those shapes; the batch stays symbolic."""

from __future__ import annotations

import onnx_ir as ir
import pytest
from conftest import conv_chain, dynamic_cnn

from smpq_onnx.errors import InvalidArgumentError, UnsupportedModelError
from smpq_onnx.model.importer import import_model


def macs(model) -> dict[str, int]:
    return {layer.name: layer.macs for layer in model.layers}


def test_input_shapes_fix_height_and_width_and_keep_the_batch_symbolic() -> None:
    model = import_model(dynamic_cnn(), input_shapes={"x": (1, 3, 16, 16)})
    assert list(model.ir_model.graph.inputs[0].shape) == [ir.SymbolicDim("N"), 3, 16, 16]
    assert model.input_shapes == {"x": (1, 3, 16, 16)}
    assert model.layer("conv1").output_shape == (1, 4, 16, 16)
    assert model.fixed_batch is None


def test_conv_macs_scale_with_height_times_width() -> None:
    small = macs(import_model(dynamic_cnn(), input_shapes={"x": [1, 3, 16, 16]}))
    large = macs(import_model(dynamic_cnn(), input_shapes={"x": [1, 3, 32, 32]}))
    assert small == {"conv1": 4 * 16 * 16 * 27, "conv2": 6 * 16 * 16 * 4, "fc": 30}
    assert large["conv1"] == 4 * small["conv1"] and large["conv2"] == 4 * small["conv2"]
    assert large["fc"] == small["fc"]  # after the global pooling, the size no longer counts


def test_without_a_shape_a_symbolic_size_is_one_line_naming_input_shape() -> None:
    with pytest.raises(UnsupportedModelError) as caught:
        import_model(dynamic_cnn())
    message = str(caught.value)
    assert "\n" not in message
    assert "input 'x' has a symbolic dimension 'H' at axis 2" in message
    assert "--input-shape x=1x3xHxW" in message


@pytest.mark.parametrize(("shapes", "expected"), [
    ({"y": (1, 3, 16, 16)}, "the model has no input 'y' (inputs: x)"),
    ({"x": (1, 3, 16)}, "x=1x3x16 has rank 3 but input 'x' has rank 4 (Nx3xHxW)"),
    ({"x": (4, 3, 16, 16)}, "x=4x3x16x16 has batch 4; write the batch (axis 0) as 1"),
    ({"x": (1, 3, 0, 16)}, "x=1x3x0x16 has a dimension <= 0"),
    ({"x": (1, 1, 16, 16)}, "sets axis 1 to 1 but the model fixes it at 3"),
])
def test_bad_input_shapes_are_one_line_errors(shapes: dict, expected: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        import_model(dynamic_cnn(), input_shapes=shapes)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_a_shape_for_a_static_input_only_has_to_agree() -> None:
    model = import_model(conv_chain(), input_shapes={"x": (1, 3, 8, 8)})
    assert macs(model) == macs(import_model(conv_chain()))


def test_a_fixed_batch_is_detected() -> None:
    assert import_model(dynamic_cnn(batch=1, height=16, width=16)).fixed_batch == 1
    assert import_model(conv_chain()).fixed_batch is None
