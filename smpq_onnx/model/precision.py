"""FP16 models analysed in float32: every float16 tensor, type and cast of the graph (bodies
included) becomes float32, and what was float16 is recorded so that costs count it at 2 bytes
and the emitted model gets its float16 inputs and outputs back
(:func:`restore_float16_interface`).

Why float32 inside: the fake-quant engine and the QDQ form compute in float32 (QuantizeLinear
takes float16 only from opset 19, and ONNX Runtime's CPU provider lacks float16 kernels for
many ops), and a float16 value is exactly representable in float32, so the weights and the
data lose nothing. What changes is the rounding of the float ops between layers, which run
in float32 instead of float16: the simulation is at least as precise as the original model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT16 = TensorProto.FLOAT16
FLOAT = TensorProto.FLOAT
DTYPE_ATTRIBUTES = ("to", "dtype")
"""Integer attributes naming an element type (Cast, RandomNormal, EyeLike, ...)."""


@dataclass(frozen=True)
class Float16Interface:
    """What of a float16 model was converted to float32."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    constants: frozenset[str] = frozenset()
    """Initializers and Constant-node outputs that were float16 (2 bytes per element in the
    costs; import lifts Constant nodes to initializers of the same name)."""

    @property
    def any(self) -> bool:
        return bool(self.inputs or self.outputs or self.constants)


def to_float32(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Float16Interface]:
    """``model`` with float16 turned into float32 (itself when it holds no float16)."""
    if not _has_float16(model):
        return model, Float16Interface()
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    interface = Float16Interface(
        inputs=tuple(v.name for v in graph.input if _elem_type(v) == FLOAT16),
        outputs=tuple(v.name for v in graph.output if _elem_type(v) == FLOAT16),
        constants=frozenset(
            [t.name for g in _graphs(graph) for t in g.initializer if t.data_type == FLOAT16]
            + [n.output[0] for n in _all_nodes(graph) if n.op_type == "Constant"
               and any(a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT16
                       for a in n.attribute)]))
    for g in _graphs(graph):
        _convert_graph(g)
    return converted, interface


def restore_float16_interface(model: onnx.ModelProto, interface: Float16Interface) -> None:
    """Give ``model`` (in place) the float16 inputs and outputs of ``interface``: a Cast to
    float32 after each such input and a Cast to float16 before each such output."""
    graph = model.graph
    casts_in = []
    for value in graph.input:
        if value.name not in interface.inputs:
            continue
        inner = f"{value.name}__float32"
        for node in _all_nodes(graph):
            node.input[:] = [inner if name == value.name else name for name in node.input]
        for out in graph.output:
            if out.name == value.name:
                out.name = inner
        casts_in.append(helper.make_node("Cast", [value.name], [inner], to=FLOAT,
                                         name=f"{value.name}__to_float32"))
        value.type.tensor_type.elem_type = FLOAT16
    casts_out = []
    for value in graph.output:
        if value.name not in interface.outputs:
            continue
        inner = f"{value.name}__float32"
        for node in graph.node:
            node.output[:] = [inner if name == value.name else name for name in node.output]
            node.input[:] = [inner if name == value.name else name for name in node.input]
        casts_out.append(helper.make_node("Cast", [inner], [value.name], to=FLOAT16,
                                          name=f"{value.name}__to_float16"))
        value.type.tensor_type.elem_type = FLOAT16
    interface_names = {*interface.inputs, *interface.outputs}
    kept_info = [v for v in graph.value_info if v.name not in interface_names]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    nodes = [*casts_in, *graph.node, *casts_out]
    del graph.node[:]
    graph.node.extend(nodes)


def _elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for g in _graphs(graph):
        yield from g.node


def _has_float16(model: onnx.ModelProto) -> bool:
    for g in _graphs(model.graph):
        if any(t.data_type == FLOAT16 for t in g.initializer):
            return True
        if any(_elem_type(v) == FLOAT16 for v in (*g.input, *g.output, *g.value_info)):
            return True
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT16:
                    return True
                if attr.name in DTYPE_ATTRIBUTES and attr.type == onnx.AttributeProto.INT \
                        and attr.i == FLOAT16:
                    return True
    return False


def _as_float32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor).astype(np.float32)
    return numpy_helper.from_array(array, tensor.name)


def _convert_graph(graph: onnx.GraphProto) -> None:
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == FLOAT16:
            graph.initializer[i].CopyFrom(_as_float32(tensor))
    for value in (*graph.input, *graph.output, *graph.value_info):
        if _elem_type(value) == FLOAT16:
            value.type.tensor_type.elem_type = FLOAT
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT16:
                attr.t.CopyFrom(_as_float32(attr.t))
            elif (attr.name in DTYPE_ATTRIBUTES and attr.type == onnx.AttributeProto.INT
                  and attr.i == FLOAT16):
                attr.i = FLOAT
