"""Deployable outputs of a policy: the QDQ ONNX model and the per-tensor encodings.

The model is emitted at an opset and IR version the installed onnxruntime loads: opset 13 at
least (per-channel DequantizeLinear), 21 when 16-bit tensors or native int4 weights need
those types, IR version no newer than ``MAX_IR_VERSION``. Files are written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from onnx import helper, version_converter

from smpq_onnx.errors import UnsupportedModelError
from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.loading import default_opset
from smpq_onnx.model.precision import restore_float16_interface
from smpq_onnx.passes.qdq import QdqEmissionPass
from smpq_onnx.quant.calibration import Calibration
from smpq_onnx.quant.options import FLOAT_BITS
from smpq_onnx.quant.policy import Policy, publish, write_text_atomic

MAX_IR_VERSION = 13  # onnxruntime 1.31 loads IR <= 13 (FACTS.md)
PER_AXIS_OPSET = 13
SIXTEEN_BIT_OPSET = 21


def required_opset(policy: Policy, *, native_int4: bool) -> int:
    options = list(policy.values())
    if any(16 in (o.w_bits, o.a_bits) for o in options) or (
            native_int4 and any(o.w_bits <= 4 for o in options)):
        return SIXTEEN_BIT_OPSET
    return PER_AXIS_OPSET


def emit_qdq_model(model: ImportedModel, policy: Policy, calibration: Calibration, *,
                   profile: str, native_int4: bool = False) -> onnx.ModelProto:
    proto = ir.to_proto(model.ir_model)
    opset = default_opset(proto) or PER_AXIS_OPSET
    target = max(opset, required_opset(policy, native_int4=native_int4))
    if target > opset:
        try:
            proto = version_converter.convert_version(proto, target)
        except Exception as e:  # the converter raises bare RuntimeErrors
            raise UnsupportedModelError(
                f"cannot upgrade the model from opset {opset} to {target}, needed for "
                f"the chosen bit-widths ({str(e).splitlines()[0][:120]}); avoid 16-bit options "
                "or export the model at a newer opset") from e
    emitted = ir.from_proto(proto)
    QdqEmissionPass(
        model.layers, policy, calibration, profile=profile, native_int4=native_int4,
        owned_biases=frozenset(la.bias for la in model.layers if model.owns_bias(la) and la.bias),
        per_channel_weights=calibration.settings.per_channel_weights,
    )(emitted)
    out = ir.to_proto(emitted)
    if model.float16.inputs or model.float16.outputs:
        restore_float16_interface(out, model.float16)
    minimum_ir = helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True)
    out.ir_version = min(max(out.ir_version, minimum_ir), MAX_IR_VERSION)
    onnx.checker.check_model(out)
    return out


def save_model_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to a temp file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save_model(model, tmp)
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encodings(model: ImportedModel, policy: Policy, calibration: Calibration) -> dict[str, Any]:
    """Per-tensor encodings (scale, offset, bits, min/max), in the AIMET-style layout.

    ``activation_encodings``: tensor -> [one encoding]; ``param_encodings``: weight -> one
    encoding per output channel. offset = -zero_point, so real = (q + offset) * scale.
    """
    activations: dict[str, list[dict[str, Any]]] = {}
    params: dict[str, list[dict[str, Any]]] = {}
    for layer in model.layers:
        option = policy[layer.name]
        if option.a_bits != FLOAT_BITS and layer.activation not in activations:
            p = calibration.activation(layer.activation, option.a_bits)
            activations[layer.activation] = [{
                "bitwidth": p.bits, "dtype": "int", "is_symmetric": str(p.qmin < 0),
                "scale": p.scale, "offset": -p.zero_point,
                "min": (p.qmin - p.zero_point) * p.scale, "max": (p.qmax - p.zero_point) * p.scale,
            }]
        if option.w_bits != FLOAT_BITS and layer.weight not in params:
            scales = calibration.weight_scales(layer, option.w_bits)
            limit = 2 ** (option.w_bits - 1) - 1
            params[layer.weight] = [{
                "bitwidth": option.w_bits, "dtype": "int", "is_symmetric": "True",
                "scale": float(s), "offset": 0, "min": -limit * float(s),
                "max": limit * float(s),
            } for s in scales]
    return {"version": "0.6.1", "activation_encodings": activations,
            "param_encodings": params, "quantizer_args": {
                "activation_bitwidth": "mixed", "param_bitwidth": "mixed",
                "per_channel_quantization": calibration.settings.per_channel_weights}}


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
