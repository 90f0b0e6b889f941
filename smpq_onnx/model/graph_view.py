"""A networkx analysis view of the main graph of an onnx-ir model.

Nodes are ONNX nodes (``kind="op"``), graph inputs (``kind="input"``) and initializers
(``kind="initializer"``), so a shared weight shows every consumer. Each edge is one tensor
use, keyed by the tensor name, with the consumer's input ``index``; a ``MultiDiGraph`` keeps
``Add(h, h)`` as two edges. If/Loop/Scan bodies read outer tensors implicitly: those captures
become explicit edges to the control-flow node with ``captured=True`` and ``index=-1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx
import onnx_ir as ir

OP, INPUT, INITIALIZER = "op", "input", "initializer"


def build_graph_view(model: ir.Model) -> nx.MultiDiGraph:
    graph = model.graph
    view = nx.MultiDiGraph()
    order = {node: i for i, node in enumerate(graph)}
    for graph_input in graph.inputs:
        view.add_node(_source_key(graph_input), kind=INPUT, tensor=graph_input.name)
    for initializer in graph.initializers.values():
        view.add_node(_source_key(initializer), kind=INITIALIZER, tensor=initializer.name)
    for node in graph:
        view.add_node(
            node.name, kind=OP, op_type=node.op_type, order=order[node],
            outputs=tuple(o.name for o in node.outputs if o.name),
        )
    for node in graph:
        for index, value in enumerate(node.inputs):
            if value is not None:
                _add_use(view, value, node.name or "", index=index, captured=False)
        for captured in sorted(_captured_values(node, graph), key=lambda v: v.name or ""):
            _add_use(view, captured, node.name or "", index=-1, captured=True)
    return view


def execution_order(view: nx.MultiDiGraph) -> tuple[str, ...]:
    """Op nodes in a deterministic topological order (ties broken by original position)."""
    ops = view.subgraph(n for n, d in view.nodes(data=True) if d["kind"] == OP)
    return tuple(nx.lexicographical_topological_sort(ops, key=lambda n: ops.nodes[n]["order"]))


def _source_key(value: ir.Value) -> str:
    producer = value.producer()
    if producer is not None:
        return producer.name or ""
    prefix = INPUT if value.is_graph_input() else INITIALIZER
    return f"{prefix}:{value.name}"


def _add_use(view: nx.MultiDiGraph, value: ir.Value, consumer: str, *, index: int,
             captured: bool) -> None:
    source = _source_key(value)
    if source not in view:
        # A constant owned by an outer scope or a dangling value: still a source of data.
        view.add_node(source, kind=INITIALIZER, tensor=value.name)
    view.add_edge(source, consumer, key=f"{value.name}@{index}", tensor=value.name,
                  index=index, captured=captured)


def _captured_values(node: ir.Node, main: ir.Graph) -> set[ir.Value]:
    """Values of ``main`` read by nodes inside the subgraphs of ``node``."""
    captured: set[ir.Value] = set()
    for subgraph in _subgraphs(node):
        for inner in ir.traversal.RecursiveGraphIterator(subgraph):
            for value in inner.inputs:
                if value is not None and value.graph is main:
                    captured.add(value)
    return captured


def _subgraphs(node: ir.Node) -> Iterator[ir.Graph]:
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.as_graph()
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.as_graphs()
