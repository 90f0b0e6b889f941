"""Hardware cost of a policy, in pure numpy (no ONNX Runtime).

For a policy (layer -> option):
- BOPs = sum over layers of MACs * w_bits * a_bits (a_bits: the layer's INPUT activation).
- Weight bytes (flash) = per distinct weight tensor ceil(numel * w_bits / 8) + one scale per
  output channel (per-channel) or per tensor, plus a zero point per scale when weights are
  asymmetric; biases as int32 (4 bytes each); float layers at 4 bytes per parameter (2 in a
  float16 model); plus every other constant of the model at its own dtype size (float16 ones
  of a float16 model at 2 bytes, though analysed in float32).
- Peak activation bytes (SRAM): see :mod:`smpq_onnx.hardware.liveness`.
- Latency = sum of MACs / (MACs per cycle of the option * clock), when the profile has a
  throughput table covering every option used; otherwise None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from smpq_onnx.hardware.liveness import LivenessTable, build_liveness
from smpq_onnx.hardware.profile import DeviceProfile
from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.quant.options import FLOAT_BITS, Option
from smpq_onnx.quant.policy import Policy

BIAS_BYTES = 4  # int32 bias for quantized layers, float32 for float ones


@dataclass(frozen=True)
class Costs:
    macs: int
    bops: int
    weight_bytes: int
    peak_activation_bytes: int
    latency_s: float | None

    def to_json_dict(self) -> dict[str, float | int | None]:
        return {
            "macs": self.macs, "bops": self.bops, "weight_bytes": self.weight_bytes,
            "peak_activation_bytes": self.peak_activation_bytes, "latency_s": self.latency_s,
        }


class CostModel:
    """Cost tables of one model on one device profile."""

    def __init__(self, model: ImportedModel, profile: DeviceProfile) -> None:
        self.model = model
        self.profile = profile
        self.layers = {layer.name: layer for layer in model.layers}
        self.liveness: LivenessTable = build_liveness(model.flow, model.schedule, model.shapes,
                                                      model.layers)
        layer_constants = {t for layer in model.layers for t in (layer.weight, layer.bias) if t}
        self.other_constant_bytes = _constant_bytes(model.ir_model, exclude=layer_constants,
                                                    halves=model.float16.constants)

    def layer_bops(self, name: str, option: Option) -> int:
        return self.layers[name].macs * option.w_bits * option.a_bits

    def layer_weight_bytes(self, name: str, option: Option) -> int:
        """Bytes of the layer's weight and bias at ``option`` (weight counted even if shared)."""
        layer = self.layers[name]
        return self._weight_tensor_bytes(layer, option.w_bits) + layer.bias_params * BIAS_BYTES

    def layer_latency_s(self, name: str, option: Option) -> float | None:
        rate = self.profile.macs_per_second(option)
        return None if rate is None else self.layers[name].macs / rate

    def _weight_tensor_bytes(self, layer: QuantizableLayer, w_bits: int) -> int:
        if w_bits == FLOAT_BITS:
            return layer.weight_params * (2 if layer.weight in self.model.float16.constants
                                          else 4)
        scheme = self.profile.weight_quantization
        n_scales = layer.channels if scheme.granularity == "per_channel" else 1
        zero_point_bytes = 0 if scheme.symmetric else n_scales * math.ceil(w_bits / 8)
        packed = math.ceil(layer.weight_params * w_bits / 8)
        return packed + n_scales * self.profile.scale_bytes + zero_point_bytes

    def weight_bytes(self, policy: Policy) -> int:
        total = self.other_constant_bytes
        seen_weights: set[str] = set()
        for name, option in policy.items():
            layer = self.layers[name]
            total += layer.bias_params * BIAS_BYTES
            if layer.weight not in seen_weights:
                seen_weights.add(layer.weight)
                total += self._weight_tensor_bytes(layer, option.w_bits)
        return total

    def buffer_bits(self, policy: Policy) -> np.ndarray:
        """Storage bit-width of every activation buffer under ``policy``."""
        float_bits = self.profile.float_activation_bits
        bits = np.empty(len(self.liveness.buffers))
        for i, buffer in enumerate(self.liveness.buffers):
            widths = [policy[name].a_bits for name in buffer.readers]
            if buffer.read_in_float or not widths:
                widths.append(float_bits)
            bits[i] = max(widths)
        return bits

    def peak_activation_bytes(self, policy: Policy) -> int:
        return self.liveness.peak_bytes(self.buffer_bits(policy))

    def cost(self, policy: Policy) -> Costs:
        latencies = [self.layer_latency_s(name, option) for name, option in policy.items()]
        return Costs(
            macs=self.model.total_macs,
            bops=sum(self.layer_bops(name, option) for name, option in policy.items()),
            weight_bytes=self.weight_bytes(policy),
            peak_activation_bytes=self.peak_activation_bytes(policy),
            latency_s=None if any(t is None for t in latencies)
            else float(sum(t for t in latencies if t is not None)),
        )


def _constant_bytes(model: ir.Model, *, exclude: set[str], halves: frozenset[str]) -> int:
    """Bytes of every initializer (subgraphs included) not in ``exclude``; those in ``halves``
    were float16 in the source model and count 2 bytes per element."""
    total = 0
    graphs = [model.graph, *(
        g for node in ir.traversal.RecursiveGraphIterator(model.graph)
        for attr in node.attributes.values() if attr.type == ir.AttributeType.GRAPH
        for g in [attr.as_graph()]
    )]
    for graph in graphs:
        for name, value in graph.initializers.items():
            tensor = value.const_value
            if name in exclude or tensor is None:
                continue
            numel = math.prod(tensor.shape.numpy())
            bits = 16 if name in halves else tensor.dtype.bitwidth
            total += math.ceil(numel * bits / 8)
    return total
