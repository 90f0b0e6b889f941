"""The evaluation graph of a policy: FP32 model + activation fake-quant + quantized weights.

::

    t -> [layer]      ==>   t -> QuantizeLinear(s, z) -> Clip(qmin, qmax) -> DequantizeLinear
                                                                                 -> [layer]

One chain per (activation tensor, bits), placed just before its first quantized reader; other
readers (a residual Add, a float layer) keep the float tensor. Symmetric quantizers omit the
Add/Sub of the zero point. Weights are not rewritten in the graph: the evaluator overrides the
weight initializers with fake-quantized arrays (``SessionOptions.add_initializer``), which keeps
onnxruntime's prepacked convolution path. Built on the protobuf directly: this runs once per
evaluated policy, so it avoids any IR round trip. Numerics equal :mod:`smpq_onnx.quant.quantizers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.quant.options import FLOAT_BITS, Shares, shares_of
from smpq_onnx.quant.policy import Policy
from smpq_onnx.quant.quantizers import ActivationQuantParams

ActivationParamsFn = Callable[[str, int], ActivationQuantParams]


def fake_quant_tensor_name(tensor: str, bits: int) -> str:
    return f"{tensor}__smpq_fq{bits}"


def activation_chain(tensor: str, params: ActivationQuantParams, *, opset: int
                     ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes and constants computing the fake-quantized ``tensor``.

    Up to 8 bits: QuantizeLinear to uint8 (asymmetric) or int8 (symmetric), a Clip on the
    integers when the range is narrower than the container (opset >= 12 clips integers), then
    DequantizeLinear: three vectorized passes with a one-byte intermediate. onnxruntime's
    QuantizeLinear divides by the scale and rounds half to even, exactly as the reference.
    Otherwise (16 bits, or 3-7 bits below opset 12) the same arithmetic in float ops:
    Div -> Round -> [Add z] -> Clip -> [Sub z] -> Mul.
    """
    if params.bits <= 8 and (params.bits == 8 or opset >= 12):
        return _qdq_chain(tensor, params)
    return _float_chain(tensor, params)


def _qdq_chain(tensor: str, params: ActivationQuantParams
               ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    prefix = f"{tensor}__smpq{params.bits}"
    dtype = np.int8 if params.qmin < 0 else np.uint8
    tensors = [numpy_helper.from_array(np.array(params.scale, dtype=np.float32),
                                       f"{prefix}_scale"),
               numpy_helper.from_array(np.array(params.zero_point, dtype=dtype), f"{prefix}_zp")]
    nodes = [helper.make_node("QuantizeLinear", [tensor, f"{prefix}_scale", f"{prefix}_zp"],
                              [f"{prefix}_q"], name=f"{prefix}_q")]
    quantized = f"{prefix}_q"
    info = np.iinfo(dtype)
    if (params.qmin, params.qmax) != (info.min, info.max):
        tensors += [numpy_helper.from_array(np.array(params.qmin, dtype=dtype), f"{prefix}_qmin"),
                    numpy_helper.from_array(np.array(params.qmax, dtype=dtype), f"{prefix}_qmax")]
        nodes.append(helper.make_node("Clip", [quantized, f"{prefix}_qmin", f"{prefix}_qmax"],
                                      [f"{prefix}_clip"], name=f"{prefix}_clip"))
        quantized = f"{prefix}_clip"
    nodes.append(helper.make_node("DequantizeLinear",
                                  [quantized, f"{prefix}_scale", f"{prefix}_zp"],
                                  [fake_quant_tensor_name(tensor, params.bits)],
                                  name=f"{prefix}_dq"))
    return nodes, tensors


def _float_chain(tensor: str, params: ActivationQuantParams
                 ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    prefix = f"{tensor}__smpq{params.bits}"
    out = fake_quant_tensor_name(tensor, params.bits)
    consts = {
        f"{prefix}_scale": params.scale, f"{prefix}_qmin": params.qmin,
        f"{prefix}_qmax": params.qmax,
    }
    nodes = [
        helper.make_node("Div", [tensor, f"{prefix}_scale"], [f"{prefix}_div"],
                         name=f"{prefix}_div"),
        helper.make_node("Round", [f"{prefix}_div"], [f"{prefix}_round"], name=f"{prefix}_round"),
    ]
    rounded = f"{prefix}_round"
    if params.zero_point:
        consts[f"{prefix}_zp"] = params.zero_point
        nodes.append(helper.make_node("Add", [rounded, f"{prefix}_zp"], [f"{prefix}_shift"],
                                      name=f"{prefix}_shift"))
        rounded = f"{prefix}_shift"
    nodes.append(helper.make_node("Clip", [rounded, f"{prefix}_qmin", f"{prefix}_qmax"],
                                  [f"{prefix}_clip"], name=f"{prefix}_clip"))
    clipped = f"{prefix}_clip"
    if params.zero_point:
        nodes.append(helper.make_node("Sub", [clipped, f"{prefix}_zp"], [f"{prefix}_unshift"],
                                      name=f"{prefix}_unshift"))
        clipped = f"{prefix}_unshift"
    nodes.append(helper.make_node("Mul", [clipped, f"{prefix}_scale"], [out],
                                  name=f"{prefix}_mul"))
    tensors = [numpy_helper.from_array(np.array(v, dtype=np.float32), name)
               for name, v in consts.items()]
    return nodes, tensors


def build_eval_model(base: onnx.ModelProto, layers: Iterable[QuantizableLayer],
                     policy: Policy, activation_params: ActivationParamsFn) -> onnx.ModelProto:
    """Copy of ``base`` with an activation fake-quant chain before every quantized layer.

    A :class:`~smpq_onnx.quant.options.Mixture` input gets one chain per width and their weighted
    Sum (the paper's mix semantics).
    """
    rewire: dict[str, tuple[str, Shares]] = {}  # layer name -> (tensor, activation shares)
    for layer in layers:
        shares = shares_of(policy[layer.name], "a")
        if shares != ((FLOAT_BITS, 1.0),):
            rewire[layer.name] = (layer.activation, shares)

    opset = next(o.version for o in base.opset_import if o.domain in ("", "ai.onnx"))
    model = onnx.ModelProto()
    model.CopyFrom(base)
    graph = model.graph
    del graph.node[:]
    placed: set[tuple[str, int]] = set()
    mixes: dict[tuple[str, Shares], str] = {}
    for original in base.graph.node:
        node = original
        if original.name in rewire:
            tensor, shares = rewire[original.name]
            for bits, _ in shares:
                if (tensor, bits) not in placed:
                    chain, constants = activation_chain(tensor, activation_params(tensor, bits),
                                                        opset=opset)
                    graph.node.extend(chain)
                    graph.initializer.extend(constants)
                    placed.add((tensor, bits))
            if len(shares) == 1:
                quantized = fake_quant_tensor_name(tensor, shares[0][0])
            elif (tensor, shares) in mixes:
                quantized = mixes[(tensor, shares)]
            else:
                quantized = f"{tensor}__smpq_mix{len(mixes)}"
                nodes, constants = _mixture_sum(tensor, shares, quantized)
                graph.node.extend(nodes)
                graph.initializer.extend(constants)
                mixes[(tensor, shares)] = quantized
            node = onnx.NodeProto()
            node.CopyFrom(original)
            for i, name in enumerate(node.input):
                if name == tensor:
                    node.input[i] = quantized
        graph.node.append(node)
    return model


def _mixture_sum(tensor: str, shares: Shares, out: str
                 ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``out = sum_b p_b * fq_b(tensor)``."""
    nodes, constants, terms = [], [], []
    for bits, share in shares:
        weight, term = f"{out}_p{bits}", f"{out}_t{bits}"
        constants.append(numpy_helper.from_array(np.array(share, dtype=np.float32), weight))
        nodes.append(helper.make_node("Mul", [fake_quant_tensor_name(tensor, bits), weight],
                                      [term], name=term))
        terms.append(term)
    nodes.append(helper.make_node("Sum", terms, [out], name=out))
    return nodes, constants
