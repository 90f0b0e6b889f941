"""Tensor-level facts derived from the graph view: who produces and consumes each tensor.

Shared by the quantizer-group analysis (which tensors must share a scale) and the activation
memory model (how long each tensor lives, at which bit-width it is stored).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from smpq_onnx.model.graph_view import INITIALIZER, OP

# Ops whose output has the scale of their (first) input: a quantized value passes through.
SCALE_PRESERVING_OPS = frozenset({
    "Relu", "Clip", "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
    "Identity", "Dropout", "Pad", "Slice", "GlobalMaxPool", "SpaceToDepth", "DepthToSpace",
})

# Ops that run on quantized tensors and requantize their result: their inputs are stored at
# the bit-width of their output. Anything else consumes its inputs in float.
INTEGER_OPS = SCALE_PRESERVING_OPS | frozenset({
    "Add", "Sub", "Mul", "Concat", "AveragePool", "GlobalAveragePool", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "PRelu", "Resize", "Upsample", "Softmax",
    "ReduceMean", "Split",
})

# Elementwise unary ops a runtime computes in place (output reuses the input buffer).
IN_PLACE_OPS = frozenset({
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Identity",
    "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
})


@dataclass(frozen=True)
class TensorUse:
    consumer: str
    op_type: str
    index: int


@dataclass
class Dataflow:
    """Activation tensors (not constants) of the main graph and their uses."""

    producer: dict[str, str | None] = field(default_factory=dict)
    """Tensor -> producing op node (None for graph inputs)."""
    uses: dict[str, list[TensorUse]] = field(default_factory=dict)
    op_type: dict[str, str] = field(default_factory=dict)
    op_inputs: dict[str, list[str]] = field(default_factory=dict)
    """Op node -> its activation inputs (captured ones included), in input order."""
    op_outputs: dict[str, list[str]] = field(default_factory=dict)
    graph_outputs: frozenset[str] = frozenset()


def build_dataflow(view: nx.MultiDiGraph, graph_outputs: list[str]) -> Dataflow:
    flow = Dataflow(graph_outputs=frozenset(graph_outputs))
    for node, data in view.nodes(data=True):
        if data["kind"] == OP:
            flow.op_type[node] = data["op_type"]
            flow.op_outputs[node] = list(data["outputs"])
            flow.op_inputs[node] = []
            for tensor in data["outputs"]:
                flow.producer[tensor] = node
                flow.uses.setdefault(tensor, [])
        elif data["kind"] != INITIALIZER:
            flow.producer[data["tensor"]] = None
            flow.uses.setdefault(data["tensor"], [])
    for source, consumer, data in sorted(view.edges(data=True),
                                         key=lambda e: (e[1], e[2]["index"], e[2]["tensor"])):
        if view.nodes[source]["kind"] == INITIALIZER:
            continue
        tensor = data["tensor"]
        flow.uses[tensor].append(TensorUse(consumer, flow.op_type[consumer], data["index"]))
        flow.op_inputs[consumer].append(tensor)
    return flow
