"""Cut a model into segments at single-tensor boundaries, so evaluations can share prefixes.

Two policies that agree on every layer before some point compute the same activations up to
that point. The evaluator keeps the boundary activations of recent evaluations and starts the
next one at the first segment whose configuration differs (see
:mod:`smpq_onnx.engine.prefix_cache`).

::

    input -> [conv1 relu conv2] -> t1 -> [conv3 add] -> t2 -> [conv4 gap gemm] -> logits
              segment 0                  segment 1             segment 2

A boundary sits between two positions of the node order where exactly one float tensor is
alive (produced before, read after): a residual block's interior is never cut, its output
is. Each segment holds at least one quantizable layer, a boundary tensor over the whole
evaluation set must fit ``max_boundary_bytes`` (early high-resolution maps of a big evaluation
set are skipped rather than cached), and the cuts split the work into about equal shares.
Models with If/Loop/Scan bodies stay one segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import onnx
from onnx import helper

from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.model.shapes import Shape


@dataclass(frozen=True)
class Segment:
    index: int
    nodes: tuple[onnx.NodeProto, ...]
    inputs: tuple[str, ...]
    """Tensors the segment reads from before it: the graph inputs, or one boundary tensor."""
    output: str
    """The boundary tensor it hands on, or the model output for the last segment."""
    layers: tuple[QuantizableLayer, ...]


@dataclass(frozen=True)
class SegmentPlan:
    segments: tuple[Segment, ...]
    elem_types: dict[str, int]
    """ONNX element type of every boundary tensor and graph input."""

    def __len__(self) -> int:
        return len(self.segments)


def plan_segments(model: onnx.ModelProto, layers: Sequence[QuantizableLayer],
                  shapes: dict[str, Shape], *, n_samples: int,
                  max_boundary_bytes: int, max_segments: int = 8) -> SegmentPlan:
    """Segments of ``model``'s node order (which must be topological)."""
    graph = model.graph
    nodes = list(graph.node)
    output = graph.output[0].name
    inputs = tuple(i.name for i in graph.input)
    layer_at = {layer.name: layer for layer in layers}
    elem_types = _float_elem_types(model)

    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in nodes for a in node.attribute):
        cuts: list[tuple[int, str]] = []
    else:
        cuts = _cuts(nodes, inputs, output, layer_at, shapes, elem_types,
                     n_samples=n_samples, max_bytes=max_boundary_bytes,
                     max_segments=max_segments)

    segments: list[Segment] = []
    bounds = [(0, ""), *cuts, (len(nodes), output)]
    for (start, _), (stop, tensor) in pairwise(bounds):
        part = tuple(nodes[start:stop])
        seg_inputs = (segments[-1].output,) if segments else inputs
        segments.append(Segment(len(segments), part, seg_inputs, tensor,
                                tuple(layer_at[n.name] for n in part if n.name in layer_at)))
    return SegmentPlan(tuple(segments), elem_types)


def _cuts(nodes: list[onnx.NodeProto], inputs: tuple[str, ...], output: str,
          layer_at: dict[str, QuantizableLayer], shapes: dict[str, Shape],
          elem_types: dict[str, int], *, n_samples: int, max_bytes: int,
          max_segments: int) -> list[tuple[int, str]]:
    """(position, boundary tensor) of every cut, in order.

    Candidates are single-tensor boundaries that a layer reads as its input activation (its
    quantizer already ends any fusion there), with a layer on each side, whose activations
    over the evaluation set fit ``max_bytes``; of those, the ones nearest to equal shares of the
    work (MACs plus elements written, a proxy for fake-quant time) are kept, at most
    ``max_segments - 1``. Few segments lose little reuse and keep per-run overhead small.
    """
    live = _live_sets(nodes, inputs, output)
    work = np.cumsum([0] + [
        (layer_at[n.name].macs if n.name in layer_at else 0)
        + sum(int(np.prod(shapes.get(o, (0,)))) for o in n.output) for n in nodes])
    layer_positions = [i for i, n in enumerate(nodes) if n.name in layer_at]
    layer_inputs = {layer.activation for layer in layer_at.values()}
    candidates: list[tuple[int, str]] = []
    for position in range(1, len(nodes)):
        crossing = live[position]
        if len(crossing) != 1:
            continue
        (tensor,) = crossing
        if (tensor not in layer_inputs or tensor not in elem_types or tensor in inputs
                or tensor not in shapes):
            continue
        if not any(p < position for p in layer_positions) or not any(
                p >= position for p in layer_positions):
            continue
        if int(np.prod(shapes[tensor])) * 4 * n_samples > max_bytes:
            continue
        candidates.append((position, tensor))
    chosen: dict[int, str] = {}
    total = float(work[-1]) or 1.0
    for share in range(1, max_segments):
        if not candidates:
            break
        target = total * share / max_segments
        position, tensor = min(candidates, key=lambda c: abs(float(work[c[0]]) - target))
        chosen[position] = tensor
    cuts = sorted(chosen.items())
    # Keep a layer in every segment (two targets may pick cuts with no layer between them).
    kept: list[tuple[int, str]] = []
    for position, tensor in cuts:
        start = kept[-1][0] if kept else 0
        if any(start <= p < position for p in layer_positions):
            kept.append((position, tensor))
    return kept


def _live_sets(nodes: list[onnx.NodeProto], inputs: tuple[str, ...], output: str
               ) -> list[set[str]]:
    """live[p]: tensors produced before position p (or graph inputs) and read at or after p."""
    last_read: dict[str, int] = {}
    for position, node in enumerate(nodes):
        for name in node.input:
            if name:
                last_read[name] = position
    last_read[output] = len(nodes)
    produced_at = {name: -1 for name in inputs}
    for position, node in enumerate(nodes):
        for name in node.output:
            produced_at[name] = position
    live: list[set[str]] = [set() for _ in range(len(nodes) + 1)]
    for name, read in last_read.items():
        if name not in produced_at:
            continue  # an initializer
        for position in range(produced_at[name] + 1, read + 1):
            live[position].add(name)
    return live



def _float_elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of graph inputs and node outputs that are float32."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {}
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        elem = info.type.tensor_type.elem_type
        if elem == onnx.TensorProto.FLOAT:
            types[info.name] = elem
    return types


def names_read(node: onnx.NodeProto) -> set[str]:
    """The tensors ``node`` reads: its inputs and, through If/Loop/Scan bodies, the outer
    tensors those bodies use (any name their nodes read; a superset is harmless)."""
    names = {name for name in node.input if name}
    for attr in node.attribute:
        for graph in (attr.g, *attr.graphs) if attr.type in (
                onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else ():
            for inner in graph.node:
                names |= names_read(inner)
    return names


def segment_model(plan: SegmentPlan, segment: Segment, base: onnx.ModelProto,
                  initializers: Sequence[onnx.TensorProto]) -> onnx.ModelProto:
    """A standalone model of ``segment`` with the given initializers (those it reads)."""
    read = {name for node in segment.nodes for name in names_read(node)}
    graph_inputs = [i for i in base.graph.input if i.name in segment.inputs]
    if segment.index > 0:
        graph_inputs = [helper.make_tensor_value_info(segment.inputs[0],
                                                      plan.elem_types[segment.inputs[0]], None)]
    outputs = [o for o in base.graph.output if o.name == segment.output] or [
        helper.make_tensor_value_info(segment.output, plan.elem_types[segment.output], None)]
    graph = helper.make_graph(list(segment.nodes), f"{base.graph.name}_segment{segment.index}",
                              graph_inputs, outputs,
                              [init for init in initializers if init.name in read])
    model = helper.make_model(graph, opset_imports=list(base.opset_import))
    model.ir_version = base.ir_version
    return model
