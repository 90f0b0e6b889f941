"""Fold ConstantOfShape nodes whose shape is a constant into initializers.

::

    shape (initializer) -> ConstantOfShape(value) -> W -> Conv   ==>   W (initializer) -> Conv

Some exporters and onnx's own "light" test models build weights this way; the layer finder
needs them as constants. The new initializer takes the output's name.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from smpq_onnx.passes.initializers import fold_into_initializer

MAX_FOLDED_ELEMENTS = 1 << 28
"""Larger fills stay nodes (1 GiB in float32)."""


class FoldConstantOfShapePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx"):
                continue
            shape, out = node.inputs[0], node.outputs[0]
            if shape is None or shape.const_value is None or out.is_graph_output():
                continue
            dims = [int(d) for d in np.asarray(shape.const_value.numpy()).reshape(-1)]
            if any(d < 0 for d in dims) or int(np.prod(dims)) > MAX_FOLDED_ELEMENTS:
                continue
            value_attr = node.attributes.get("value")
            fill = (np.asarray(value_attr.as_tensor().numpy()).reshape(-1)
                    if value_attr is not None else np.zeros(1, np.float32))
            folded = np.full(dims, fill[0], dtype=fill.dtype)
            fold_into_initializer(graph, node, out, folded)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
