"""Reading an FP32 ONNX model from disk and rejecting what the tool cannot take.

Checks, each a one-line :class:`~smpq_onnx.errors.SmpqError`:
missing file, not ONNX / truncated (protobuf or checker failure), missing external data,
opset outside 11..26, and models that are already quantized.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from smpq_onnx.errors import ModelLoadError, UnsupportedModelError

MIN_OPSET = 11
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
    check_model_supported(model, source=str(path))
    return model


def check_model_supported(model: onnx.ModelProto, *, source: str) -> None:
    """Reject opsets outside [MIN_OPSET, MAX_OPSET] and already-quantized models."""
    opset = default_opset(model)
    if opset is None:
        raise UnsupportedModelError(f"{source} imports no ai.onnx opset; re-export the model")
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"{source} uses opset {opset}, older than {MIN_OPSET}; upgrade it with "
            "onnx.version_converter.convert_version(model, 13)"
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
