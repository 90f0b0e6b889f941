"""Quantizable layers: Conv, ConvTranspose, Gemm and MatMul with a constant weight operand.

Each layer gets a weight quantizer (per output channel along ``channel_axis``) and an input
activation quantizer on ``activation``. MACs are counted per sample (batch 1):

- Conv:          numel(Y) * W.shape[1] * prod(kernel)    (W.shape[1] is already Cin/group)
- ConvTranspose: numel(X) * W.shape[1] * prod(kernel)    (each input element meets Cout/g*k weights)
- Gemm:          M * N * K
- MatMul:        numel(Y) * K
Only the main graph is searched; layers inside If/Loop bodies stay in float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_ir as ir

from smpq_onnx.errors import UnsupportedModelError
from smpq_onnx.model.shapes import Shape

LAYER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class QuantizableLayer:
    name: str
    op_type: str
    weight: str
    """Name of the constant weight tensor."""
    activation: str
    """Name of the input activation tensor (the one the activation quantizer sits on)."""
    output: str
    bias: str | None
    weight_shape: Shape
    channel_axis: int
    """Axis of the weight holding output channels (per-channel scales run along it)."""
    input_shape: Shape
    output_shape: Shape
    macs: int
    weight_params: int
    bias_params: int

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params

    @property
    def channels(self) -> int:
        return self.weight_shape[self.channel_axis]


def find_layers(model: ir.Model, shapes: dict[str, Shape]) -> tuple[QuantizableLayer, ...]:
    """Every quantizable layer of the main graph, in graph order."""
    layers = []
    for node in model.graph:
        if node.op_type in LAYER_OPS and node.domain in ("", "ai.onnx"):
            layer = _as_layer(node, shapes)
            if layer is not None:
                layers.append(layer)
    return tuple(layers)


def subgraph_layers(model: ir.Model) -> tuple[str, ...]:
    """Layer-type nodes inside If/Loop/Scan bodies (left in float), as ``name (op)``."""
    return tuple(
        f"{node.name or '?'} ({node.op_type})"
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
        if node.graph is not model.graph and node.op_type in LAYER_OPS
    )


def _as_layer(node: ir.Node, shapes: dict[str, Shape]) -> QuantizableLayer | None:
    inputs = list(node.inputs)
    if node.op_type == "MatMul":
        constant = [v is not None and v.const_value is not None for v in inputs[:2]]
        if constant == [False, True]:
            weight_index, data_index = 1, 0
        elif constant == [True, False]:
            weight_index, data_index = 0, 1
        else:
            return None  # two activations (attention) or two constants (foldable)
    else:
        weight_index, data_index = 1, 0
        if len(inputs) < 2 or inputs[1] is None or inputs[1].const_value is None:
            return None
        if inputs[0] is None or inputs[0].const_value is not None:
            return None
    weight, data = inputs[weight_index], inputs[data_index]
    assert weight is not None and weight.const_value is not None and data is not None
    if weight.const_value.dtype != ir.DataType.FLOAT:
        raise UnsupportedModelError(
            f"layer '{node.name}' has {weight.const_value.dtype.name} weights; smpq-onnx takes "
            "FP32 or FP16 models: export or convert it to float32"
        )
    bias = _bias(node)
    weight_shape = tuple(weight.const_value.shape.numpy())
    output = node.outputs[0]
    try:
        input_shape, output_shape = shapes[data.name or ""], shapes[output.name or ""]
    except KeyError as e:
        raise UnsupportedModelError(
            f"layer '{node.name}': shape of tensor {e} is unknown; give a model with static shapes"
        ) from e
    macs, channel_axis = _macs_and_axis(node, weight_shape, input_shape, output_shape,
                                        weight_left=weight_index == 0)
    return QuantizableLayer(
        name=node.name or "", op_type=node.op_type, weight=weight.name or "",
        activation=data.name or "", output=output.name or "",
        bias=bias.name if bias is not None else None, weight_shape=weight_shape,
        channel_axis=channel_axis, input_shape=input_shape, output_shape=output_shape, macs=macs,
        weight_params=math.prod(weight_shape),
        bias_params=math.prod(bias.const_value.shape.numpy()) if bias is not None
        and bias.const_value is not None else 0,
    )


def _bias(node: ir.Node) -> ir.Value | None:
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.inputs) < 3:
        return None
    bias = node.inputs[2]
    return bias if bias is not None and bias.const_value is not None else None


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.as_int()) if attr is not None else default


def _macs_and_axis(node: ir.Node, weight: Shape, x: Shape, y: Shape, *,
                   weight_left: bool) -> tuple[int, int]:
    if node.op_type == "Conv":
        return math.prod(y) * weight[1] * math.prod(weight[2:]), 0
    if node.op_type == "ConvTranspose":
        return math.prod(x) * weight[1] * math.prod(weight[2:]), 1
    if node.op_type == "Gemm":
        trans_b = bool(_int_attr(node, "transB", 0))
        k = weight[1] if trans_b else weight[0]
        return math.prod(y) * k, 0 if trans_b else 1
    # MatMul: x @ W (K = W.shape[-2], channels on the last axis) or W @ x (K = W.shape[-1]).
    if weight_left:
        return math.prod(y) * weight[-1], len(weight) - 2 if len(weight) > 1 else 0
    k = weight[-2] if len(weight) > 1 else weight[0]
    return math.prod(y) * k, len(weight) - 1
