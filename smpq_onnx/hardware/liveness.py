"""Activation buffers and when they are live, for the peak-activation-memory (SRAM) model.

Every activation tensor of the main graph is stored at a bit-width set by who reads it:

- read by a quantizable layer: that layer's activation bits;
- read by an op that runs on quantized values (``INTEGER_OPS``: Relu, Add, Concat, pooling, ...):
  the bit-width of that op's output (requantization is fused into the producer);
- read by any other op, or a graph output: the profile's ``float_activation_bits``.
With several readers the widest wins. A tensor lives from the step that produces it (graph
inputs: step 0) to its last reader (graph outputs: the last step). An elementwise unary op
(``IN_PLACE_OPS``) whose input has no other reader writes its output into the input's buffer.
Peak activation memory is the largest sum of live buffer sizes over the execution order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from smpq_onnx.model.dataflow import IN_PLACE_OPS, INTEGER_OPS, Dataflow
from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.model.shapes import Shape


@dataclass(frozen=True)
class ActivationBuffer:
    tensors: tuple[str, ...]
    numel: int
    readers: frozenset[str]
    """Layers whose activation bit-width sets this buffer's storage width."""
    read_in_float: bool
    """Whether some reader consumes it in float (stored at ``float_activation_bits``)."""


@dataclass(frozen=True)
class LivenessTable:
    buffers: tuple[ActivationBuffer, ...]
    live: np.ndarray
    """Boolean matrix (buffers x steps): buffer i is live at step j."""

    def peak_bytes(self, buffer_bits: np.ndarray) -> int:
        sizes = np.ceil(np.array([b.numel for b in self.buffers]) * buffer_bits / 8.0)
        if sizes.size == 0:
            return 0
        return int((sizes @ self.live).max())


def build_liveness(flow: Dataflow, schedule: tuple[str, ...], shapes: dict[str, Shape],
                   layers: tuple[QuantizableLayer, ...]) -> LivenessTable:
    step = {node: i for i, node in enumerate(schedule)}
    last = max(len(schedule) - 1, 0)
    activation_of = {(layer.name, layer.activation) for layer in layers}

    @cache
    def sinks(tensor: str) -> tuple[frozenset[str], bool]:
        readers: set[str] = set()
        in_float = tensor in flow.graph_outputs or not flow.uses[tensor]
        for use in flow.uses[tensor]:
            if (use.consumer, tensor) in activation_of:
                readers.add(use.consumer)
            elif use.op_type in INTEGER_OPS and flow.op_outputs[use.consumer]:
                for out in flow.op_outputs[use.consumer]:
                    out_readers, out_float = sinks(out)
                    readers |= out_readers
                    in_float = in_float or out_float
            else:
                in_float = True
        return frozenset(readers), in_float

    # Group tensors into buffers: in-place outputs join their input's buffer.
    owner: dict[str, str] = {}
    for node in schedule:
        inputs, outputs = flow.op_inputs[node], flow.op_outputs[node]
        for out in outputs:
            owner[out] = out
        if (flow.op_type[node] in IN_PLACE_OPS and inputs and outputs
                and flow.producer.get(inputs[0]) is not None and len(flow.uses[inputs[0]]) == 1):
            owner[outputs[0]] = owner.get(inputs[0], inputs[0])
    for tensor in flow.producer:
        owner.setdefault(tensor, tensor)

    members: dict[str, list[str]] = {}
    for tensor in flow.producer:
        if tensor in shapes:
            members.setdefault(owner[tensor], []).append(tensor)

    buffers, intervals = [], []
    for tensors in members.values():
        start, end = last, 0
        readers: frozenset[str] = frozenset()
        in_float = False
        for tensor in tensors:
            producer = flow.producer[tensor]
            born = step[producer] if producer is not None else 0
            uses = [step[u.consumer] for u in flow.uses[tensor]]
            dies = last if tensor in flow.graph_outputs else max(uses, default=born)
            start, end = min(start, born), max(end, dies)
            tensor_readers, tensor_float = sinks(tensor)
            readers |= tensor_readers
            in_float = in_float or tensor_float
        numel = max(math.prod(shapes[t]) for t in tensors)
        buffers.append(ActivationBuffer(tuple(tensors), numel, readers, in_float))
        intervals.append((start, end))

    live = np.zeros((len(buffers), len(schedule)), dtype=bool)
    for i, (start, end) in enumerate(intervals):
        live[i, start:end + 1] = True
    return LivenessTable(tuple(buffers), live)
