"""Shared by the folding passes: replace a node's output with a new initializer."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def fold_into_initializer(graph: ir.Graph, node: ir.Node, out: ir.Value,
                          array: np.ndarray) -> None:
    """Every use of ``out`` reads a new initializer holding ``array`` (named like ``out``);
    ``node`` is removed."""
    name = out.name or f"{node.name}_folded"
    value = ir.Value(name=f"{name}__folded", const_value=ir.tensor(array, name=name))
    out.replace_all_uses_with(value)
    graph.remove(node, safe=True)
    value.name = name
    graph.register_initializer(value)
