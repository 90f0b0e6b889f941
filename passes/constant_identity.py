"""Bypass Identity nodes that merely forward a constant (main graph only).

::

    W (initializer) -> Identity -> W'  -> Conv        ==>   W -> Conv

Exporters emit these for shared or tied weights; without this pass the layer's weight input
is not a constant and the layer would not be found. Identities whose output is a graph output
are kept, and subgraphs are left alone (ORT rejects a subgraph that returns an outer value).
"""

from __future__ import annotations

import onnx_ir as ir


class ConstantIdentityEliminationPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "Identity" or node.domain not in ("", "ai.onnx"):
                continue
            source, out = node.inputs[0], node.outputs[0]
            if source is None or source.const_value is None or out.is_graph_output():
                continue
            out.replace_all_uses_with(source)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
