"""Reading an FP32 ONNX model from disk and rejecting what the tool cannot take.

Checks, each a one-line :class:`~smpq_onnx.errors.SmpqError`:
missing file, not ONNX / truncated (protobuf or checker failure), missing external data,
opset outside 7..26, and models that are already quantized.

Models at opsets 7 to 10 are upgraded to ``UPGRADE_OPSET`` with onnx's version converter
(measured on opset 7, 8, 9 and 10 models with Conv, BatchNormalization, Gemm, Relu, MaxPool,
Upsample/Resize, Dropout, Reshape, Flatten, Concat and Softmax: ONNX Runtime gives the same
outputs before and after, up to 1e-15 absolute from its opset-13 Softmax). 13 rather than 11:
the QDQ form the tool emits needs per-axis DequantizeLinear (opset 13), so a model upgraded
once is never converted again. Where the converter fails, the error names the first node
whose own conversion fails.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import helper, version_converter

from smpq_onnx.errors import ModelLoadError, UnsupportedModelError

logger = logging.getLogger(__name__)

MIN_OPSET = 7
"""The oldest default-domain opset taken (onnx's converter upgrades from 7 on)."""
NATIVE_MIN_OPSET = 11
"""Older models are upgraded on load."""
UPGRADE_OPSET = 13
MAX_OPSET = 26

# Ops that only occur in models that are already quantized.
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
    "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulNBits", "QLinearAdd",
})


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load ``path`` with its external data and check that it is a usable FP32 ONNX model."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}; check the path")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}; give the .onnx file itself")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelLoadError(
            f"{path} is not a readable ONNX model (protobuf parse failed: {_first_line(e)}); "
            "the file may be truncated or not ONNX"
        ) from e
    _check_header(model, path)
    _load_external_data(model, path)
    _check_structure(model, path)
    return supported_model(model, source=str(path))


def supported_model(model: onnx.ModelProto, *, source: str) -> onnx.ModelProto:
    """``model`` checked (:func:`check_model_supported`), upgraded to opset 13 if older than 11."""
    check_model_supported(model, source=source)
    return upgrade_opset(model, source=source)


def check_model_supported(model: onnx.ModelProto, *, source: str) -> None:
    """Reject opsets outside [MIN_OPSET, MAX_OPSET] and already-quantized models."""
    opset = default_opset(model)
    if opset is None:
        raise UnsupportedModelError(f"{source} imports no ai.onnx opset; re-export the model")
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"{source} uses opset {opset}, older than {MIN_OPSET} (the oldest onnx's version "
            f"converter upgrades); re-export the model at opset {UPGRADE_OPSET} or newer"
        )
    if opset > MAX_OPSET:
        raise UnsupportedModelError(
            f"{source} uses opset {opset}, newer than {MAX_OPSET}; export with opset <= {MAX_OPSET}"
        )
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS})
    if quantized:
        raise UnsupportedModelError(
            f"{source} is already quantized (contains {', '.join(quantized)}); "
            "give the FP32 model"
        )


def upgrade_opset(model: onnx.ModelProto, *, source: str) -> onnx.ModelProto:
    """``model`` itself from opset 11 on; older ones converted to ``UPGRADE_OPSET``."""
    opset = default_opset(model)
    if opset is None or opset >= NATIVE_MIN_OPSET:
        return model
    try:
        upgraded = _converted(model, UPGRADE_OPSET)
    except Exception as e:  # the converter raises bare RuntimeErrors, the checker its own
        raise UnsupportedModelError(
            f"{source}: onnx.version_converter cannot upgrade it from opset {opset} to "
            f"{UPGRADE_OPSET}: {_blocker(model, e)}; re-export the model at opset "
            f"{UPGRADE_OPSET} or newer") from e
    logger.info("upgraded opset %d -> %d with onnx.version_converter (%s)", opset,
                UPGRADE_OPSET, source)
    return upgraded


def _converted(model: onnx.ModelProto, target: int, *, check: bool = True) -> onnx.ModelProto:
    upgraded = version_converter.convert_version(model, target)
    # The converter keeps the IR version; an IR 3 file at opset 13 is legal but unusual.
    minimum = helper.find_min_ir_version_for(list(upgraded.opset_import), ignore_unknown=True)
    upgraded.ir_version = max(upgraded.ir_version, minimum)
    if check:
        onnx.checker.check_model(upgraded)
    return upgraded


def _blocker(model: onnx.ModelProto, error: BaseException) -> str:
    """The node that blocks the conversion, found by converting each node on its own."""
    reason = _converter_reason(error)
    node = _blocking_node(model)
    if node is None:
        return reason
    label = f"node '{node.name}' ({node.op_type})" if node.name else f"a {node.op_type} node"
    return f"{label} blocks it ({reason})"


def _converter_reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    # "/project/onnx/version_converter/adapters/scan_8_9.h:26: adapt_scan_8_9: Assertion
    # `...` failed: Unsupported conversion to opset 9": keep what follows the source location.
    text = re.sub(r"^\S*version_converter/\S+:\d+:\s*", "", text)
    text = re.sub(r"^.*?Assertion `.*?` failed:\s*", "", text)
    return text[:160] if text else type(error).__name__


def _blocking_node(model: onnx.ModelProto) -> onnx.NodeProto | None:
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # shape inference only adds types: go on without them
        inferred = graph
    typed = {info.name: info for info in (*inferred.input, *inferred.value_info,
                                          *inferred.output)}
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        names = list(dict.fromkeys(n for n in node.input if n))
        values = [n for n in names if n not in constants] + [n for n in node.output if n]
        single = helper.make_graph(
            [node], "probe",
            [typed.get(n) or helper.make_empty_tensor_value_info(n)
             for n in names if n not in constants],
            [typed.get(n) or helper.make_empty_tensor_value_info(n) for n in node.output if n],
            [constants[n] for n in names if n in constants])
        probe = helper.make_model(single, opset_imports=list(model.opset_import))
        probe.ir_version = max(model.ir_version, 4)  # IR 3 lists initializers as inputs
        try:
            # The checker needs every probe input and output typed.
            _converted(probe, UPGRADE_OPSET, check=all(n in typed for n in values))
        except Exception:  # any failure of this node's own conversion names it
            return node
    return None


def default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def _check_header(model: onnx.ModelProto, path: Path) -> None:
    # Protobuf parses many non-ONNX byte strings into a near-empty message.
    if model.ir_version == 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(
            f"{path} is not an ONNX model (no IR version, graph or opset); "
            "the file may be truncated or of another format"
        )


def _check_structure(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelLoadError(
            f"{path} is not a valid ONNX model ({_first_line(e)}); re-export it"
        ) from e


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (FileNotFoundError, OSError, onnx.checker.ValidationError) as e:
        raise ModelLoadError(
            f"external weight data of {path} could not be read ({_first_line(e)}); "
            "keep the .data file next to the model"
        ) from e


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
