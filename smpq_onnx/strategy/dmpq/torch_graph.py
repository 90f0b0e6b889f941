"""An imported ONNX graph run in torch, node by node, with hooks on the quantizable layers.

The interpreter walks the main graph's nodes in their (topological) ONNX order and executes
each with torch ops, so gradients flow through the whole model. Before a quantizable layer
(Conv, ConvTranspose, Gemm, MatMul with a constant weight) runs, a caller's
:class:`LayerHooks` may replace three of its inputs with functions of the float tensors::

    x ----> hooks.activation(layer, x) --+
    W ----> hooks.weight(layer, W) ------+--> [Conv / ConvTranspose / Gemm / MatMul] --> y
    b ----> hooks.bias(layer, b) --------+      (bias only where the layer owns it)

Rules:

- Only the default ONNX domain at opsets 11-26 (what :mod:`smpq_onnx.model.loading` accepts).
  An op without a torch implementation here, a node of another domain, or a control-flow node
  (If/Loop/Scan) raises :class:`UnsupportedModelError` naming the op: the ``dmpq`` method
  needs every op to run in torch.
- Constants (initializers, ``Constant`` nodes) are float32/int64 tensors made once; no
  gradient flows into them except through the hooks.
- Numerics follow the ONNX operator definitions in float32; on the bundled example the
  outputs equal ONNX Runtime's to 1e-4 (``tests/test_dmpq.py``).
- Intermediate tensors are dropped after their last reader, as a runtime would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
import onnx_ir as ir
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from smpq_onnx.errors import UnsupportedModelError
from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.layers import QuantizableLayer

Tensor = torch.Tensor


class LayerHooks(Protocol):
    """Replacements for a quantizable layer's inputs, each a function of the float tensor."""

    def weight(self, layer: str, value: Tensor) -> Tensor: ...

    def activation(self, layer: str, value: Tensor) -> Tensor: ...

    def bias(self, layer: str, value: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class _LayerSlots:
    """Which inputs of a layer node hold its weight, input activation and (owned) bias."""

    layer: str
    weight: int
    activation: int
    bias: int | None


@dataclass(frozen=True)
class _Node:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    opset: int

    def attr(self, key: str, default: Any = None) -> Any:
        value = self.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else value


OpFn = Callable[[_Node, list[Tensor | None]], list[Tensor]]


class TorchGraph:
    """The FP32 graph of an :class:`ImportedModel` as a differentiable torch function."""

    def __init__(self, model: ImportedModel) -> None:
        proto = ir.to_proto(model.ir_model)
        self.opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        self.input_names = [i.name for i in proto.graph.input]
        self.output_names = [o.name for o in proto.graph.output]
        self.constants: dict[str, Tensor] = {
            init.name: _to_tensor(numpy_helper.to_array(init)) for init in proto.graph.initializer}
        self.nodes = [self._node(n) for n in proto.graph.node]
        self.slots = _layer_slots(model, self.nodes)
        self._last_use = _last_uses(self.nodes, set(self.output_names))

    def _node(self, node: onnx.NodeProto) -> _Node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            domain = f" of domain '{node.domain}'" if node.domain not in ("", "ai.onnx") else ""
            raise UnsupportedModelError(
                f"op {node.op_type}{domain} (node '{node.name}') has no torch implementation, "
                "which --method dmpq needs; use another --method for this model")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return _Node(node.name, node.op_type, tuple(node.input), tuple(node.output), attrs,
                     self.opset)

    def __call__(self, feeds: Mapping[str, Tensor], hooks: LayerHooks | None = None
                 ) -> list[Tensor]:
        """The graph outputs for ``feeds`` (graph input name -> tensor), in output order."""
        env: dict[str, Tensor] = dict(self.constants)
        for name in self.input_names:
            if name not in feeds:
                raise UnsupportedModelError(f"no value fed for graph input '{name}'")
            env[name] = feeds[name]
        for index, node in enumerate(self.nodes):
            args: list[Tensor | None] = [env[n] if n else None for n in node.inputs]
            slots = self.slots.get(node.name)
            if slots is not None and hooks is not None:
                weight, activation = args[slots.weight], args[slots.activation]
                assert weight is not None and activation is not None
                args[slots.weight] = hooks.weight(slots.layer, weight)
                args[slots.activation] = hooks.activation(slots.layer, activation)
                if slots.bias is not None:
                    bias = args[slots.bias]
                    assert bias is not None
                    args[slots.bias] = hooks.bias(slots.layer, bias)
            results = OPS[node.op_type](node, args)
            for name, value in zip(node.outputs, results, strict=False):
                if name:
                    env[name] = value
            for name in node.inputs:
                if self._last_use.get(name) == index and name not in self.constants:
                    env.pop(name, None)
        return [env[name] for name in self.output_names]


def _to_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(array, copy=True))


def _layer_slots(model: ImportedModel, nodes: Sequence[_Node]) -> dict[str, _LayerSlots]:
    by_name: dict[str, QuantizableLayer] = {layer.name: layer for layer in model.layers}
    slots = {}
    for node in nodes:
        layer = by_name.get(node.name)
        if layer is None:
            continue
        bias = None
        if model.owns_bias(layer) and len(node.inputs) > 2 and node.inputs[2] == layer.bias:
            bias = 2
        slots[node.name] = _LayerSlots(layer.name, node.inputs.index(layer.weight),
                                       node.inputs.index(layer.activation), bias)
    return slots


def _last_uses(nodes: Sequence[_Node], outputs: set[str]) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.inputs:
            if name and name not in outputs:
                last[name] = index
    return last


# --- helpers ---------------------------------------------------------------------------------


def _ints(value: Tensor | None) -> list[int] | None:
    return None if value is None else [int(v) for v in value.reshape(-1).tolist()]


def _axes(node: _Node, args: list[Tensor | None], *, input_index: int, since: int
          ) -> list[int] | None:
    """Axes from the attribute (before opset ``since``) or from an optional input."""
    if node.opset < since:
        axes = node.attr("axes")
        return None if axes is None else list(axes)
    return _ints(args[input_index]) if len(args) > input_index else None


def _spatial_pads(node: _Node, spatial: Sequence[int], kernel: Sequence[int],
                  strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """ONNX pads [begin..., end...] of a Conv/Pool node, ``auto_pad`` resolved."""
    n = len(spatial)
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        return list(node.attr("pads", [0] * (2 * n)))
    if auto_pad == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX [b1, ..., bn, e1, ..., en] -> torch's (bn, en, ..., b1, e1) order."""
    n = len(pads) // 2
    order: list[int] = []
    for axis in reversed(range(n)):
        order += [pads[axis], pads[axis + n]]
    return order


def _unsupported(node: _Node, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{node.op_type} node '{node.name}' uses {what}, which the torch interpreter of "
        "--method dmpq does not support; use another --method for this model")


# --- layers ----------------------------------------------------------------------------------

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _conv(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x, w = args[0], args[1]
    assert x is not None and w is not None
    bias = args[2] if len(args) > 2 else None
    n = w.dim() - 2
    if n not in _CONV:
        raise _unsupported(node, f"{n}-D convolution")
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    pads = _spatial_pads(node, x.shape[2:], w.shape[2:], strides, dilations)
    padding: list[int] = pads[:n]
    if pads[:n] != pads[n:]:
        x = F.pad(x, _torch_pad(pads))
        padding = [0] * n
    return [_CONV[n](x, w, bias, strides, padding, dilations, int(node.attr("group", 1)))]


def _conv_transpose(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x, w = args[0], args[1]
    assert x is not None and w is not None
    bias = args[2] if len(args) > 2 else None
    n = w.dim() - 2
    if n not in _CONV_T:
        raise _unsupported(node, f"{n}-D transposed convolution")
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    extra = list(node.attr("output_padding", [0] * n))
    groups = int(node.attr("group", 1))
    y = _CONV_T[n](x, w, None, strides, 0, 0, groups, dilations)  # full output, no cropping
    full = list(y.shape[2:])
    output_shape = node.attr("output_shape")
    auto_pad = node.attr("auto_pad", "NOTSET")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = (list(output_shape)[-n:] if output_shape is not None
                  else [size * s for size, s in zip(x.shape[2:], strides, strict=True)])
        begin, end = [], []
        for size, out, more in zip(full, target, extra, strict=True):
            total = size + more - out
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
    elif auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        pads = list(node.attr("pads", [0] * (2 * n)))
        begin, end = pads[:n], pads[n:]
    if any(extra):
        y = F.pad(y, _torch_pad([0] * n + extra))
    index = [slice(None), slice(None)] + [slice(b, y.shape[2 + i] - e)
                                         for i, (b, e) in enumerate(zip(begin, end, strict=True))]
    y = y[tuple(index)]
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * n))
    return [y]


def _gemm(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    a, b = args[0], args[1]
    assert a is not None and b is not None
    if node.attr("transA", 0):
        a = a.transpose(0, 1)
    if node.attr("transB", 0):
        b = b.transpose(0, 1)
    y = a @ b
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if alpha != 1.0:
        y = alpha * y
    c = args[2] if len(args) > 2 else None
    if c is not None:
        y = y + (c if beta == 1.0 else beta * c)
    return [y]


def _matmul(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    a, b = args[0], args[1]
    assert a is not None and b is not None
    return [torch.matmul(a, b)]


# --- element-wise ----------------------------------------------------------------------------


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def op(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
        a, b = args[0], args[1]
        assert a is not None and b is not None
        return [fn(a, b)]
    return op


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    def op(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
        x = args[0]
        assert x is not None
        return [fn(x)]
    return op


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def op(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
        values = [a for a in args if a is not None]
        result = values[0]
        for value in values[1:]:
            result = fn(result, value)
        return [result]
    return op


def _div(a: Tensor, b: Tensor) -> Tensor:
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _clip(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    if node.opset < 11:  # pragma: no cover - the importer accepts opset >= 11 only
        low, high = node.attr("min"), node.attr("max")
    else:
        low = float(args[1].item()) if len(args) > 1 and args[1] is not None else None
        high = float(args[2].item()) if len(args) > 2 and args[2] is not None else None
    return [torch.clamp(x, low, high)]


def _leaky_relu(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    return [F.leaky_relu(x, float(node.attr("alpha", 0.01)))]


def _prelu(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x, slope = args[0], args[1]
    assert x is not None and slope is not None
    return [torch.where(x >= 0, x, x * slope)]


def _elu(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    return [F.elu(x, float(node.attr("alpha", 1.0)))]


def _hard_sigmoid(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return [torch.clamp(alpha * x + beta, 0.0, 1.0)]


def _hard_swish(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    return [x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)]


def _gelu(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    return [F.gelu(x, approximate=node.attr("approximate", "none"))]


def _softmax_like(fn: Callable[[Tensor, int], Tensor]) -> OpFn:
    def op(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
        x = args[0]
        assert x is not None
        if node.opset >= 13:
            return [fn(x, int(node.attr("axis", -1)))]
        axis = int(node.attr("axis", 1)) % x.dim()  # old semantics: coerce to 2-D at axis
        flat = x.reshape(math.prod(x.shape[:axis]), -1)
        return [fn(flat, 1).reshape(x.shape)]
    return op


def _batch_norm(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x, scale, bias, mean, var = args[:5]
    assert x is not None and mean is not None and var is not None
    if any(name for name in node.outputs[1:]):
        raise _unsupported(node, "training-mode outputs")
    return [F.batch_norm(x, mean, var, scale, bias, False, 0.0,
                         float(node.attr("epsilon", 1e-5)))]


# --- pooling ---------------------------------------------------------------------------------

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _global_pool(reduce: str) -> OpFn:
    def op(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
        x = args[0]
        assert x is not None
        dims = tuple(range(2, x.dim()))
        if reduce == "mean":
            return [x.mean(dim=dims, keepdim=True)]
        return [x.amax(dim=dims, keepdim=True)]
    return op


def _pool_geometry(node: _Node, x: Tensor) -> tuple[list[int], list[int], list[int], list[int]]:
    kernel = list(node.attr("kernel_shape"))
    n = len(kernel)
    if n not in _AVG:
        raise _unsupported(node, f"{n}-D pooling")
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    pads = _spatial_pads(node, x.shape[2:], kernel, strides, dilations)
    return kernel, strides, dilations, pads


def _symmetric(pads: Sequence[int], kernel: Sequence[int]) -> bool:
    n = len(kernel)
    return list(pads[:n]) == list(pads[n:]) and all(
        p <= k // 2 for p, k in zip(pads[:n], kernel, strict=True))


def _max_pool(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    if len(node.outputs) > 1 and node.outputs[1]:
        raise _unsupported(node, "the Indices output")
    kernel, strides, dilations, pads = _pool_geometry(node, x)
    n = len(kernel)
    ceil = bool(node.attr("ceil_mode", 0))
    padding = pads[:n]
    if not _symmetric(pads, kernel):
        x = F.pad(x, _torch_pad(pads), value=-math.inf)
        padding = [0] * n
    return [_MAX[n](x, kernel, strides, padding, dilations, ceil_mode=ceil)]


def _average_pool(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    kernel, strides, dilations, pads = _pool_geometry(node, x)
    n = len(kernel)
    if any(d != 1 for d in dilations):
        raise _unsupported(node, "dilations")
    ceil = bool(node.attr("ceil_mode", 0))
    include = bool(node.attr("count_include_pad", 0))
    pool = _AVG[n]
    if _symmetric(pads, kernel):
        return [pool(x, kernel, strides, pads[:n], ceil, include)]
    if ceil:
        raise _unsupported(node, "asymmetric pads with ceil_mode")
    total = pool(F.pad(x, _torch_pad(pads)), kernel, strides, 0, False, True)
    if include:
        return [total]
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    share = pool(F.pad(ones, _torch_pad(pads)), kernel, strides, 0, False, True)
    return [total / share]


# --- shape and data movement -----------------------------------------------------------------


def _flatten(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    axis = int(node.attr("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


def _reshape(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x, shape_value = args[0], args[1]
    assert x is not None
    shape = _ints(shape_value)
    assert shape is not None
    if not node.attr("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _concat(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    return [torch.cat([a for a in args if a is not None], dim=int(node.attr("axis")))]


def _transpose(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    perm = node.attr("perm")
    return [x.permute(*(list(perm) if perm is not None else reversed(range(x.dim()))))]


def _identity(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    return [x]


def _dropout(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    return [x, torch.ones_like(x, dtype=torch.bool)]


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate",
              "wrap": "circular"}


def _pad(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    pads = _ints(args[1]) if len(args) > 1 else None
    assert pads is not None
    value = float(args[2].item()) if len(args) > 2 and args[2] is not None else 0.0
    axes = _ints(args[3]) if len(args) > 3 else None
    if axes is not None:
        full = [0] * (2 * x.dim())
        for i, axis in enumerate(axes):
            axis %= x.dim()
            full[axis], full[axis + x.dim()] = pads[i], pads[i + len(axes)]
        pads = full
    mode = _PAD_MODES.get(node.attr("mode", "constant"))
    if mode is None:
        raise _unsupported(node, f"mode {node.attr('mode')}")
    order = _torch_pad(pads)
    while len(order) > 2 and order[-1] == 0 and order[-2] == 0:
        order = order[:-2]  # torch pads the trailing axes only: drop untouched leading axes
    if mode == "constant":
        return [F.pad(x, order, value=value)]
    return [F.pad(x, order, mode=mode)]


def _squeeze(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    axes = _axes(node, args, input_index=1, since=13)
    if axes is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(a % x.dim() for a in axes))]


def _unsqueeze(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    axes = _axes(node, args, input_index=1, since=13)
    assert axes is not None
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return [x]


def _shape(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    dims = list(x.shape)
    start, end = node.attr("start", 0), node.attr("end")
    return [torch.tensor(dims[start:end], dtype=torch.int64)]


def _size(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    return [torch.tensor(x.numel(), dtype=torch.int64)]


def _gather(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x, indices = args[0], args[1]
    assert x is not None and indices is not None
    axis = int(node.attr("axis", 0)) % x.dim()
    flat = indices.reshape(-1).long() % x.shape[axis]
    picked = x.index_select(axis, flat)
    return [picked.reshape(*x.shape[:axis], *indices.shape, *x.shape[axis + 1:])]


def _constant(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in node.attrs:
            return [torch.tensor(node.attrs[key], dtype=dtype)]
    if "value" in node.attrs:
        return [_to_tensor(numpy_helper.to_array(node.attrs["value"]))]
    raise _unsupported(node, f"attribute {sorted(node.attrs)}")


def _constant_of_shape(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    shape = _ints(args[0])
    assert shape is not None
    fill = node.attrs.get("value")
    value = (_to_tensor(numpy_helper.to_array(fill)).reshape(-1)[0] if fill is not None
             else torch.tensor(0.0))
    return [torch.full(shape, value.item(), dtype=value.dtype)]


def _cast(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    dtype = helper.tensor_dtype_to_np_dtype(int(node.attr("to")))
    return [x.to(torch.from_numpy(np.zeros(0, dtype=dtype)).dtype)]


def _slice(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    starts, ends = _ints(args[1]), _ints(args[2])
    assert starts is not None and ends is not None
    axes = _ints(args[3]) if len(args) > 3 else None
    steps = _ints(args[4]) if len(args) > 4 else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        size = x.shape[axis % x.dim()]
        keep = range(size)[slice(start, end, step)]
        if keep == range(size):
            continue
        x = x.index_select(axis % x.dim(), torch.tensor(list(keep), dtype=torch.int64))
    return [x]


def _reduce(kind: str, *, axes_input_since: int) -> OpFn:
    def op(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
        x = args[0]
        assert x is not None
        axes = _axes(node, args, input_index=1, since=axes_input_since)
        keep = bool(node.attr("keepdims", 1))
        if not axes:
            if node.attr("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        dims = tuple(a % x.dim() for a in axes)
        if kind == "mean":
            return [x.mean(dim=dims, keepdim=keep)]
        if kind == "sum":
            return [x.sum(dim=dims, keepdim=keep)]
        return [x.amax(dim=dims, keepdim=keep)]
    return op


def _split(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    assert x is not None
    axis = int(node.attr("axis", 0)) % x.dim()
    sizes = (list(node.attr("split")) if node.opset < 13 and node.attr("split") is not None
             else _ints(args[1]) if len(args) > 1 else None)
    if sizes is None:
        parts = len(node.outputs)
        chunk = math.ceil(x.shape[axis] / parts)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(parts)]
    return list(torch.split(x, sizes, dim=axis))


def _expand(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    x = args[0]
    shape = _ints(args[1])
    assert x is not None and shape is not None
    return [x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))]


def _where(node: _Node, args: list[Tensor | None]) -> list[Tensor]:
    cond, a, b = args[0], args[1], args[2]
    assert cond is not None and a is not None and b is not None
    return [torch.where(cond, a, b)]


OPS: dict[str, OpFn] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(_div),
    "Pow": _binary(torch.pow),
    "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Where": _where,
    "Relu": _unary(torch.relu),
    "LeakyRelu": _leaky_relu,
    "PRelu": _prelu,
    "Elu": _elu,
    "Clip": _clip,
    "Sigmoid": _unary(torch.sigmoid),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Tanh": _unary(torch.tanh),
    "Softplus": _unary(F.softplus),
    "Gelu": _gelu,
    "Erf": _unary(torch.erf),
    "Sqrt": _unary(torch.sqrt),
    "Reciprocal": _unary(torch.reciprocal),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Floor": _unary(torch.floor),
    "Ceil": _unary(torch.ceil),
    "Not": _unary(torch.logical_not),
    "Softmax": _softmax_like(lambda x, axis: torch.softmax(x, axis)),
    "LogSoftmax": _softmax_like(lambda x, axis: torch.log_softmax(x, axis)),
    "BatchNormalization": _batch_norm,
    "GlobalAveragePool": _global_pool("mean"),
    "GlobalMaxPool": _global_pool("max"),
    "AveragePool": _average_pool,
    "MaxPool": _max_pool,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Concat": _concat,
    "Transpose": _transpose,
    "Identity": _identity,
    "Dropout": _dropout,
    "Pad": _pad,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Shape": _shape,
    "Size": _size,
    "Gather": _gather,
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Cast": _cast,
    "Slice": _slice,
    "ReduceMean": _reduce("mean", axes_input_since=18),
    "ReduceSum": _reduce("sum", axes_input_since=13),
    "ReduceMax": _reduce("max", axes_input_since=18),
    "Split": _split,
    "Expand": _expand,
}
"""ONNX op type -> torch implementation (default domain)."""
