"""Fold an inference-mode BatchNormalization into the Conv/ConvTranspose/Gemm before it.

::

    X -> Conv(W, b) -> BatchNormalization(gamma, beta, mean, var) -> Y
    ==>
    X -> Conv(W * s, (b - mean) * s + beta) -> Y        s = gamma / sqrt(var + eps)

Folds only when the layer's weight (and bias) and all BN parameters are constants, the layer
output feeds only the BN, the BN has a single output (inference mode), and the layer's weight
has no other consumer. The folded weight and bias are new initializers; the layer output takes
the BN output's name so graph outputs keep their names.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

FOLDABLE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold BatchNormalization nodes into the preceding linear layer (main graph only)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for bn in list(model.graph):
            if bn.op_type == "BatchNormalization" and bn.domain in ("", "ai.onnx"):
                modified = _try_fold(model.graph, bn) or modified
        return ir.passes.PassResult(model, modified=modified)


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return np.asarray(value.const_value.numpy())


def _try_fold(graph: ir.Graph, bn: ir.Node) -> bool:
    x = bn.inputs[0]
    if x is None:
        return False
    layer = x.producer()
    if layer is None or layer.op_type not in FOLDABLE_OPS or layer.graph is not graph:
        return False
    if len(x.uses()) != 1 or len([o for o in bn.outputs if o.name]) != 1:
        return False
    params = [_const(v) for v in bn.inputs[1:5]]
    weight_value = layer.inputs[1]
    weight = _const(weight_value)
    if weight is None or any(p is None for p in params) or weight.dtype != np.float32:
        return False
    assert weight_value is not None
    if len(weight_value.uses()) != 1:
        return False
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    eps_attr = bn.attributes.get("epsilon")
    eps = float(eps_attr.as_float()) if eps_attr is not None else 1e-5
    scale = gamma / np.sqrt(var + eps)

    bias_value = layer.inputs[2] if len(layer.inputs) > 2 else None
    bias = _const(bias_value)
    if bias_value is not None and bias is None:
        return False
    n_out = scale.shape[0]
    bias64 = np.zeros(n_out) if bias is None else np.broadcast_to(bias.astype(np.float64), (n_out,))

    folded_weight = _scale_weight(layer, weight.astype(np.float64), scale)
    if folded_weight is None:
        return False
    folded_bias = (bias64 - mean) * scale + beta

    # The folded weight keeps the original name (it had no other consumer).
    weight_name = weight_value.name or f"{layer.name}_weight"
    layer.replace_input_with(1, _initializer(graph, f"{weight_name}_bnfolded", folded_weight))
    graph.initializers.pop(weight_name, None)
    layer.inputs[1].name = weight_name  # type: ignore[union-attr]
    if bias_value is not None and len(bias_value.uses()) == 1 and bias_value.name:
        bias_name = bias_value.name
    else:
        bias_name = f"{layer.name or 'layer'}_bias"
    new_bias = _initializer(graph, f"{bias_name}_bnfolded", folded_bias)
    if len(layer.inputs) < 3:
        layer.resize_inputs(3)
    layer.replace_input_with(2, new_bias)
    if bias_value is not None and not bias_value.uses() and bias_value.name == bias_name:
        graph.initializers.pop(bias_name, None)
        new_bias.name = bias_name

    bn_out = bn.outputs[0]
    out_name = bn_out.name
    x.type = x.type or bn_out.type
    x.shape = x.shape or bn_out.shape
    bn_out.replace_all_uses_with(x, replace_graph_outputs=True)
    graph.remove(bn, safe=True)
    x.name = out_name
    return True


def _scale_weight(layer: ir.Node, weight: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
    """Multiply each output channel of ``weight`` by ``scale``; None if the layout is unknown."""
    if layer.op_type == "Conv":
        if weight.shape[0] != scale.shape[0]:
            return None
        return weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    if layer.op_type == "ConvTranspose":
        group_attr = layer.attributes.get("group")
        groups = int(group_attr.as_int()) if group_attr is not None else 1
        c_in, c_out_per_group = weight.shape[0], weight.shape[1]
        if c_out_per_group * groups != scale.shape[0]:
            return None
        grouped = weight.reshape((groups, c_in // groups, c_out_per_group, *weight.shape[2:]))
        factors = scale.reshape((groups, 1, c_out_per_group) + (1,) * (weight.ndim - 2))
        return (grouped * factors).reshape(weight.shape)
    # Gemm: Y = A' B' + C, output channels along N.
    trans_b_attr = layer.attributes.get("transB")
    trans_b = bool(trans_b_attr.as_int()) if trans_b_attr is not None else False
    if weight.ndim != 2:
        return None
    n_axis = 0 if trans_b else 1
    if weight.shape[n_axis] != scale.shape[0]:
        return None
    return weight * (scale[:, None] if trans_b else scale[None, :])


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array.astype(np.float32), name=name))
    graph.register_initializer(value)
    return value
