"""Static tensor shapes of the main graph at a fixed batch size.

The batch axis of each graph input (:func:`batch_axes`: the symbolic dimension the inputs share,
axis 0 of a single input, none for an input that has no batch) may be symbolic; it is fixed to
``batch_size``.
Other symbolic input dimensions (image height and width, sequence lengths) are fixed first by
:func:`fix_input_shapes` from shapes the user gives (``--input-shape``) or reads off the
data; one still symbolic here is an error naming the input and that fix. ONNX shape inference
(with data propagation) comes first; tensors it leaves unknown are read off one ONNX Runtime
run on zero inputs, which is exact for every static-shape model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from smpq_onnx.errors import InvalidArgumentError, UnsupportedModelError

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
Dim = int | str | None
"""An input dimension: a size, a symbol's name, or None for an unnamed symbolic size."""


def batch_symbol(inputs: Mapping[str, Sequence[Dim]]) -> str | None:
    """The name of the inputs' batch dimension: the symbol most inputs share (a name with
    "batch" in it, then one at axis 0, breaks ties); None when no named symbol is shared, is
    named like a batch, or leads an input."""
    seen: dict[str, list[int]] = {}
    for dims in inputs.values():
        for symbol in dict.fromkeys(d for d in dims if isinstance(d, str)):
            seen.setdefault(symbol, []).append(list(dims).index(symbol))
    if not seen:
        return None

    def rank(symbol: str) -> tuple[int, bool, int]:
        return len(seen[symbol]), "batch" in symbol.lower(), seen[symbol].count(0)

    best = max(seen, key=rank)  # max keeps the first of equals: the earliest symbol
    count, named, leading = rank(best)
    return best if count > 1 or named or leading else None


def batch_axes(inputs: Mapping[str, Sequence[Dim]]) -> dict[str, int | None]:
    """Input -> the axis that holds its samples, or None for an input without a batch (a
    scalar, a fixed-size state fed unchanged to every batch).

    With a batch symbol (:func:`batch_symbol`) an input's batch is where that symbol is (else
    a symbolic axis 0); without one, a symbolic axis 0. A model whose every input is static
    has a fixed batch: axis 0 of inputs whose leading size is that batch (1 if any input
    leads with 1, else the first input's leading size).
    """
    symbol = batch_symbol(inputs)

    def symbolic(dim: Dim) -> bool:
        return not (isinstance(dim, int) and dim > 0)

    axes: dict[str, int | None] = {}
    if symbol is not None or any(dims and symbolic(dims[0]) for dims in inputs.values()):
        for name, dims in inputs.items():
            dims = list(dims)
            if symbol is not None and symbol in dims:
                axes[name] = dims.index(symbol)
            elif dims and (dims[0] is None or (symbol is None and symbolic(dims[0]))):
                axes[name] = 0
            else:
                axes[name] = None
        return axes
    leading = [dims[0] for dims in inputs.values() if dims]
    fixed = 1 if 1 in leading else (leading[0] if leading else None)
    return {name: 0 if dims and dims[0] == fixed else None for name, dims in inputs.items()}


def value_dims(value: ir.Value) -> tuple[Dim, ...]:
    """The dimensions of an IR value (:data:`Dim`)."""
    return tuple(d if isinstance(d, int) and d > 0
                 else (d.value if isinstance(d, ir.SymbolicDim) and d.value else None)
                 for d in (value.shape or ()))


def proto_dims(info: onnx.ValueInfoProto) -> tuple[Dim, ...]:
    """The dimensions of a protobuf value (:data:`Dim`)."""
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                 else (d.dim_param or None) for d in info.type.tensor_type.shape.dim)


def model_batch_axes(model: ir.Model) -> dict[str, int | None]:
    """:func:`batch_axes` of the model's graph inputs."""
    return batch_axes({value.name or "": value_dims(value) for value in _graph_inputs(model)})


def infer_static_shapes(model: ir.Model, *, batch_size: int = 1) -> dict[str, Shape]:
    """Map every main-graph tensor (inputs, node outputs, initializers) to its static shape."""
    proto = ir.to_proto(model)
    _fix_input_dims(proto, batch_size)
    del proto.graph.value_info[:]
    for output in proto.graph.output:
        output.type.tensor_type.ClearField("shape")

    shapes: dict[str, Shape] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        logger.debug("ONNX shape inference failed (%s); using ONNX Runtime", e)
        inferred = proto
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        shape = _static_shape(info)
        if shape is not None:
            shapes[info.name] = shape
    for init in proto.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)

    wanted = [o.name for node in model.graph for o in node.outputs if o.name]
    missing = [name for name in wanted if name not in shapes]
    if missing:
        shapes.update(_shapes_from_runtime(proto, missing))
    return shapes


def symbolic_input_dims(model: ir.Model) -> dict[str, list[int]]:
    """Graph input -> the axes (other than its batch axis) whose size is not a number."""
    found: dict[str, list[int]] = {}
    batch = model_batch_axes(model)
    for value in _graph_inputs(model):
        axes = [axis for axis, dim in enumerate(value.shape or ())
                if axis != batch[value.name or ""] and not (isinstance(dim, int) and dim > 0)]
        if axes:
            found[value.name or ""] = axes
    return found


def fix_input_shapes(model: ir.Model, shapes: Mapping[str, Sequence[int]], *,
                     source: str = "--input-shape") -> None:
    """Give graph inputs the concrete ``shapes`` (full shapes, batch written as 1).

    A symbolic batch axis stays symbolic; every other axis takes the given size. ``source``
    names where the shapes came from in error messages.
    """
    inputs = {value.name or "": value for value in _graph_inputs(model)}
    batch_axis = model_batch_axes(model)
    for name, dims in shapes.items():
        value = inputs.get(name)
        if value is None:
            raise InvalidArgumentError(
                f"{source}: the model has no input '{name}' (inputs: {', '.join(inputs)}); "
                "name one of those")
        dims = tuple(int(d) for d in dims)
        current = tuple(value.shape or ())
        given = _shape_text(dims)
        if len(dims) != len(current):
            raise InvalidArgumentError(
                f"{source}: {name}={given} has rank {len(dims)} but input '{name}' has rank "
                f"{len(current)} ({_shape_text(current)}); give every axis, the batch as 1")
        if any(d <= 0 for d in dims):
            raise InvalidArgumentError(
                f"{source}: {name}={given} has a dimension <= 0; give positive sizes")
        axis_b = batch_axis.get(name)
        if axis_b is not None and dims[axis_b] != 1:
            raise InvalidArgumentError(
                f"{source}: {name}={given} has batch {dims[axis_b]}; write the batch "
                f"(axis {axis_b}) as 1")
        for axis, (want, have) in enumerate(zip(dims, current, strict=True)):
            if axis != axis_b and isinstance(have, int) and have > 0 and have != want:
                raise InvalidArgumentError(
                    f"{source}: {name}={given} sets axis {axis} to {want} but the model fixes "
                    f"it at {have} ({_shape_text(current)})")
        value.shape = ir.Shape([current[axis] if axis == axis_b else d
                                for axis, d in enumerate(dims)])


def _graph_inputs(model: ir.Model) -> list[ir.Value]:
    initializers = set(model.graph.initializers)
    return [value for value in model.graph.inputs if value.name not in initializers]


def _shape_text(dims: Sequence[object]) -> str:
    """``1x3xHxW``: numbers, symbolic names, ``?`` for unnamed dimensions."""
    return "x".join(str(d) if isinstance(d, int)
                    else (d.value if isinstance(d, ir.SymbolicDim) and d.value else "?")
                    for d in dims)


def _fix_input_dims(proto: onnx.ModelProto, batch_size: int) -> None:
    initializer_names = {init.name for init in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializer_names]
    batch = batch_axes({i.name: proto_dims(i) for i in graph_inputs})
    for graph_input in graph_inputs:
        dims = graph_input.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis == batch[graph_input.name]:
                dim.Clear()
                dim.dim_value = batch_size
                continue
            label = dim.dim_param or "?"
            template = "x".join(
                "1" if k == batch[graph_input.name]
                else (str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
                      else (d.dim_param or "?")) for k, d in enumerate(dims))
            raise UnsupportedModelError(
                f"input '{graph_input.name}' has a symbolic dimension '{label}' at axis {axis}; "
                f"give its concrete shape with --input-shape {graph_input.name}={template} "
                "(numbers for the symbolic sizes, batch 1), or give data to take it from "
                "the first sample"
            )


def _static_shape(info: onnx.ValueInfoProto) -> Shape | None:
    tensor_type = info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = []
    for dim in tensor_type.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        dims.append(int(dim.dim_value))
    return tuple(dims)


def _shapes_from_runtime(proto: onnx.ModelProto, names: list[str]) -> dict[str, Shape]:
    """Shapes read off one run on zero inputs; empty (with a warning) when the run fails."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        feeds = {
            i.name: np.zeros(i.shape, dtype=_numpy_dtype(i.type)) for i in session.get_inputs()
        }
        outputs = session.run(names, feeds)
    except Exception as e:  # onnxruntime raises its own untyped errors
        logger.warning("shapes of %d tensor(s) (e.g. %r) are unknown: ONNX Runtime could not "
                       "run the model (%s)", len(names), names[0], str(e).splitlines()[0][:160])
        return {}
    pairs = zip(names, outputs, strict=True)
    return {name: tuple(int(d) for d in np.shape(out)) for name, out in pairs}


def _numpy_dtype(ort_type: str) -> type:
    table = {
        "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
        "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
    }
    return table.get(ort_type, np.float32)
