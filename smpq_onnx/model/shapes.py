"""Static tensor shapes of the main graph at a fixed batch size.

The batch axis (axis 0 of each graph input) may be symbolic; it is fixed to ``batch_size``.
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
    """Graph input -> the axes (other than the batch axis 0) whose size is not a number."""
    found: dict[str, list[int]] = {}
    for value in _graph_inputs(model):
        axes = [axis for axis, dim in enumerate(value.shape or ())
                if axis > 0 and not (isinstance(dim, int) and dim > 0)]
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
        if dims[0] != 1:
            raise InvalidArgumentError(
                f"{source}: {name}={given} has batch {dims[0]}; write the batch (axis 0) as 1")
        for axis, (want, have) in enumerate(zip(dims, current, strict=True)):
            if axis > 0 and isinstance(have, int) and have > 0 and have != want:
                raise InvalidArgumentError(
                    f"{source}: {name}={given} sets axis {axis} to {want} but the model fixes "
                    f"it at {have} ({_shape_text(current)})")
        batch = current[0] if current else 1
        value.shape = ir.Shape([batch, *dims[1:]])


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
    for graph_input in proto.graph.input:
        if graph_input.name in initializer_names:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis == 0:
                dim.Clear()
                dim.dim_value = batch_size
                continue
            label = dim.dim_param or "?"
            template = "x".join(
                ["1"] + [str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
                         else (d.dim_param or "?") for d in list(dims)[1:]])
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
