"""Emit a policy as a standard-ONNX QDQ model, annotated with its bit-widths.

Per quantized layer (w bits weights, a bits input activations)::

    W (float)                     ==>  W_q (int8 | int16 | int4) -> DequantizeLinear(s_w, axis)
    x -> layer                    ==>  x -> QuantizeLinear(s_x, z) -> [Clip(qmin, qmax)]
                                            -> DequantizeLinear(s_x, z) -> layer
    b (float, both quantized)     ==>  b_q (int32) -> DequantizeLinear(s_x * s_w, axis 0)

Activations use uint8/int8 containers up to 8 bits (uint16/int16 at 16 bits) with a Clip on
the integers when the bit-width has no ONNX type (2-7 bits): the runnable "QCDQ" form. Weights
are n-bit values in int8 containers (native int4 when asked and the opset allows). Every code
and scale comes from the same :class:`~smpq_onnx.quant.calibration.Calibration` the evaluator used,
so the deployed model computes what the search measured. Each layer node carries
``smpq.w_bits``/``smpq.a_bits`` metadata; the model carries ``smpq.policy`` (JSON),
``smpq.profile`` and ``smpq.version``. Only ai.onnx ops are emitted.
"""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir

from smpq_onnx._version import __version__
from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.quant.calibration import Calibration
from smpq_onnx.quant.options import FLOAT_BITS
from smpq_onnx.quant.policy import Policy

META_W_BITS = "smpq.w_bits"
META_A_BITS = "smpq.a_bits"
META_POLICY = "smpq.policy"
META_PROFILE = "smpq.profile"
META_VERSION = "smpq.version"

_ACT_TYPES: dict[tuple[int, bool], tuple[type[np.integer], ir.DataType]] = {
    (8, False): (np.uint8, ir.DataType.UINT8), (8, True): (np.int8, ir.DataType.INT8),
    (16, False): (np.uint16, ir.DataType.UINT16), (16, True): (np.int16, ir.DataType.INT16),
}


class QdqEmissionPass(ir.passes.InPlacePass):
    def __init__(self, layers: tuple[QuantizableLayer, ...], policy: Policy,
                 calibration: Calibration, *, profile: str, owned_biases: frozenset[str],
                 native_int4: bool = False, per_channel_weights: bool = True) -> None:
        super().__init__()
        self.layers = layers
        self.policy = policy
        self.calibration = calibration
        self.profile = profile
        self.owned_biases = owned_biases
        self.native_int4 = native_int4
        self.per_channel = per_channel_weights

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        nodes = {node.name: node for node in graph}
        dequantized_weights: dict[tuple[str, int], ir.Value] = {}
        dequantized_acts: dict[tuple[str, int], ir.Value] = {}
        for layer in self.layers:
            node = nodes[layer.name]
            option = self.policy[layer.name]
            node.metadata_props[META_W_BITS] = str(option.w_bits)
            node.metadata_props[META_A_BITS] = str(option.a_bits)
            weight_index = 0 if node.inputs[0] is not None and \
                node.inputs[0].name == layer.weight else 1
            if option.w_bits != FLOAT_BITS:
                key = (layer.weight, option.w_bits)
                if key not in dequantized_weights:
                    dequantized_weights[key] = self._weight(graph, node, layer, option.w_bits)
                node.replace_input_with(weight_index, dequantized_weights[key])
            if option.a_bits != FLOAT_BITS:
                key = (layer.activation, option.a_bits)
                if key not in dequantized_acts:
                    dequantized_acts[key] = self._activation(graph, node, layer, option.a_bits)
                for index, value in enumerate(node.inputs):
                    if value is not None and value.name == layer.activation:
                        node.replace_input_with(index, dequantized_acts[key])
            if (option.w_bits != FLOAT_BITS and option.a_bits != FLOAT_BITS
                    and layer.bias in self.owned_biases):
                quantized_bias = self.calibration.bias_codes(layer, option.w_bits, option.a_bits)
                if quantized_bias is not None:
                    node.replace_input_with(2, self._bias(graph, node, layer, w_bits=option.w_bits,
                                                          a_bits=option.a_bits,
                                                          quantized=quantized_bias))
        for name in [n for n, v in graph.initializers.items() if not v.uses()
                     and not v.is_graph_input()]:
            graph.initializers.pop(name)
        model.metadata_props[META_POLICY] = json.dumps(self.policy.to_json_dict(),
                                                       sort_keys=True)
        model.metadata_props[META_PROFILE] = self.profile
        model.metadata_props[META_VERSION] = __version__
        return ir.passes.PassResult(model, modified=True)

    def _weight(self, graph: ir.Graph, node: ir.Node, layer: QuantizableLayer,
                bits: int) -> ir.Value:
        weight = graph.initializers[layer.weight].const_value
        assert weight is not None
        scales = self.calibration.weight_scales(layer, bits)
        codes = self.calibration.weight_codes(layer, bits)
        dtype = ir.DataType.INT4 if self.native_int4 and bits <= 4 else \
            ir.DataType.INT8 if bits <= 8 else ir.DataType.INT16
        prefix = f"{layer.weight}_smpq_w{bits}"
        zero = np.zeros_like(scales, dtype=codes.dtype)
        attributes: dict[str, int] = {"axis": layer.channel_axis}
        if not self.per_channel:
            scales, zero, attributes = scales[:1].reshape(()), zero[:1].reshape(()), {}
        inputs = [
            _constant(graph, f"{prefix}_quantized", codes, dtype),
            _constant(graph, f"{prefix}_scale", scales.astype(np.float32)),
            _constant(graph, f"{prefix}_zero_point", zero, dtype),
        ]
        dq = ir.node("DequantizeLinear", inputs, attributes, name=f"{prefix}_dq",
                     outputs=[ir.Value(name=f"{prefix}_dequantized")])
        graph.insert_before(node, dq)
        return dq.outputs[0]

    def _activation(self, graph: ir.Graph, node: ir.Node, layer: QuantizableLayer,
                    bits: int) -> ir.Value:
        params = self.calibration.activation(layer.activation, bits)
        signed = params.qmin < 0
        np_type, ir_type = _ACT_TYPES[(8 if bits <= 8 else 16, signed)]
        prefix = f"{layer.activation}_smpq_a{bits}"
        scale = _constant(graph, f"{prefix}_scale", np.array(params.scale, np.float32))
        zero = _constant(graph, f"{prefix}_zero_point", np.array(params.zero_point, np_type),
                         ir_type)
        source = _value(graph, node, layer.activation)
        quantize = ir.node("QuantizeLinear", [source, scale, zero], name=f"{prefix}_q",
                           outputs=[ir.Value(name=f"{prefix}_quantized")])
        chain = [quantize]
        codes = quantize.outputs[0]
        container = (int(np.iinfo(np_type).min), int(np.iinfo(np_type).max))
        if (params.qmin, params.qmax) != container:
            low = _constant(graph, f"{prefix}_qmin", np.array(params.qmin, np_type), ir_type)
            high = _constant(graph, f"{prefix}_qmax", np.array(params.qmax, np_type), ir_type)
            clip = ir.node("Clip", [codes, low, high], name=f"{prefix}_clip",
                           outputs=[ir.Value(name=f"{prefix}_clipped")])
            chain.append(clip)
            codes = clip.outputs[0]
        dequantize = ir.node("DequantizeLinear", [codes, scale, zero], name=f"{prefix}_dq",
                             outputs=[ir.Value(name=f"{prefix}_dequantized")])
        chain.append(dequantize)
        graph.insert_before(node, chain)
        return dequantize.outputs[0]

    def _bias(self, graph: ir.Graph, node: ir.Node, layer: QuantizableLayer, *, w_bits: int,
              a_bits: int, quantized: tuple[np.ndarray, np.ndarray]) -> ir.Value:
        codes, scales = quantized
        prefix = f"{layer.bias}_smpq_b{w_bits}x{a_bits}"
        inputs = [
            _constant(graph, f"{prefix}_quantized", codes),
            _constant(graph, f"{prefix}_scale", scales),
            _constant(graph, f"{prefix}_zero_point", np.zeros(scales.shape, np.int32)),
        ]
        dq = ir.node("DequantizeLinear", inputs, {"axis": 0}, name=f"{prefix}_dq",
                     outputs=[ir.Value(name=f"{prefix}_dequantized")])
        graph.insert_before(node, dq)
        return dq.outputs[0]


def _constant(graph: ir.Graph, name: str, array: np.ndarray,
              dtype: ir.DataType | None = None) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, dtype=dtype, name=name))
    graph.register_initializer(value)
    return value


def _value(graph: ir.Graph, node: ir.Node, name: str) -> ir.Value:
    for value in node.inputs:
        if value is not None and value.name == name:
            return value
    raise KeyError(name)
