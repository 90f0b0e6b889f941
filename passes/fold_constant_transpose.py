"""Fold Transpose nodes applied to constants (a weight exported as ``Transpose(W)``).

::

    W (initializer) -> Transpose(perm) -> W^T -> MatMul      ==>   W^T (initializer) -> MatMul

The TorchScript exporter writes ``nn.Linear`` on a 3-D input this way when constant folding
is off. The new initializer takes the Transpose output's name.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from smpq_onnx.passes.initializers import fold_into_initializer


class FoldConstantTransposePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
                continue
            source, out = node.inputs[0], node.outputs[0]
            if source is None or source.const_value is None or out.is_graph_output():
                continue
            array = np.asarray(source.const_value.numpy())
            perm_attr = node.attributes.get("perm")
            perm = list(perm_attr.as_ints()) if perm_attr is not None else None
            folded = np.ascontiguousarray(np.transpose(array, perm))
            fold_into_initializer(graph, node, out, folded)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
