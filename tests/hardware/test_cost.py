"""Cost model on hand-built graphs with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import conv_chain, make_model
from onnx import TensorProto, helper

from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import DeviceProfile, load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.quant.options import FP32, Option
from smpq_onnx.strategy.space import SearchSpace


def profile_with(**changes: object) -> DeviceProfile:
    base = load_profile("flexible").model_dump()
    base.update(changes)
    return DeviceProfile.model_validate_json(__import__("json").dumps(base))


def test_bops_and_weight_bytes_of_a_mixed_policy() -> None:
    model = import_model(conv_chain())
    profile = load_profile("flexible")  # symmetric per-channel weights, 4-byte scales
    costs = CostModel(model, profile)
    space = SearchSpace.build(model, profile)
    policy = space.uniform(Option(8, 8)).replace(conv1=Option(3, 5), fc=FP32)

    macs = {"conv1": 4 * 64 * 27, "conv2": 6 * 64 * 4, "fc": 384 * 5}
    expected_bops = macs["conv1"] * 3 * 5 + macs["conv2"] * 8 * 8 + macs["fc"] * 32 * 32
    # conv1: 108 weights at 3 bits -> ceil(40.5) = 41 B, 4 scales, 4 int32 biases.
    # conv2: 24 weights at 8 bits, 6 scales, no bias. fc: float, 1920 + 5 params.
    expected_weight_bytes = (41 + 4 * 4 + 4 * 4) + (24 + 6 * 4) + (1920 + 5) * 4
    total = costs.cost(policy)
    assert total.bops == expected_bops
    assert total.weight_bytes == expected_weight_bytes
    assert total.macs == sum(macs.values())
    assert total.latency_s is None  # flexible has no throughput table


def test_asymmetric_per_tensor_weights_store_one_scale_and_zero_point() -> None:
    profile = profile_with(weight_quantization={"granularity": "per_tensor", "symmetric": False,
                                                "narrow_range": False})
    costs = CostModel(import_model(conv_chain()), profile)
    assert costs.layer_weight_bytes("conv2", Option(4, 8)) == 12 + 4 + 1
    assert costs.layer_weight_bytes("conv2", Option(16, 8)) == 48 + 4 + 2


def test_peak_activation_bytes_follow_the_schedule_and_bits() -> None:
    # x[1,3,8,8] -> conv1 -> c1 -> relu (in place) -> r1 -> conv2 -> c2 -> flatten -> f -> fc -> y
    model = import_model(conv_chain())
    profile = load_profile("flexible")  # float_activation_bits = 32
    costs = CostModel(model, profile)
    policy = SearchSpace.build(model, profile).uniform(Option(8, 4))
    # c1/r1 share a buffer stored at conv2's 4 bits: 256 el -> 128 B; x at conv1's 4 bits: 96 B.
    # c2/f (Flatten is in place) at fc's 4 bits: 384 el -> 192 B; y float: 5 * 4 = 20 B.
    # Live sets: conv1: x + c1 = 224; relu: c1 = 128; conv2: c1 + c2 = 320; flatten: c2 = 192;
    # fc: c2 + y = 212.
    assert costs.peak_activation_bytes(policy) == 320
    wider = policy.replace(conv2=Option(8, 8))
    assert costs.peak_activation_bytes(wider) == 256 + 192


def test_residual_branch_keeps_its_input_alive() -> None:
    # x -> a (conv) -> b (conv) -> Add(b, x) -> y : x stays live through both convs.
    rng = np.random.default_rng(0)
    w = {n: rng.normal(size=(2, 2, 1, 1)).astype(np.float32) for n in ("wa", "wb")}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="ca"),
             helper.make_node("Conv", ["a", "wb"], ["b"], name="cb"),
             helper.make_node("Add", ["b", "x"], ["y"], name="add")]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], w)
    model = import_model(proto)
    profile = load_profile("flexible")
    costs = CostModel(model, profile)
    policy = SearchSpace.build(model, profile).uniform(Option(8, 8))
    # 32 elements each. x: 8 bits (ca) but also read by Add -> y float -> 32 bits: 128 B.
    # a: 32 B (cb's 8 bits). b: read by Add -> float: 128 B. y: 128 B.
    # Steps: ca: x + a = 160; cb: x + a + b = 288; add: x + b + y = 384.
    assert costs.peak_activation_bytes(policy) == 384


def test_latency_uses_the_profile_throughput() -> None:
    model = import_model(conv_chain())
    profile = load_profile("mcu")
    costs = CostModel(model, profile)
    policy = SearchSpace.build(model, profile).uniform(Option(8, 8)).replace(conv1=Option(4, 8))
    rates = profile.throughput.macs_per_cycle  # type: ignore[union-attr]
    clock = profile.throughput.clock_hz  # type: ignore[union-attr]
    layers = {layer.name: layer.macs for layer in model.layers}
    expected = (layers["conv1"] / rates["W4A8"] + (layers["conv2"] + layers["fc"]) / rates["W8A8"])
    assert costs.cost(policy).latency_s == pytest.approx(expected / clock)


def test_shared_input_and_scale_preserving_ops_make_quantizer_groups() -> None:
    # x feeds c1 and c2 (same tensor). c3 reads Relu(cat), c4 and c5 read MaxPool(cat): scale
    # preserving ops, so all three read one quantized tensor, whatever the profile.
    rng = np.random.default_rng(0)
    w = {n: rng.normal(size=(2, 2, 1, 1)).astype(np.float32) for n in ("w1", "w2")}
    w.update({n: rng.normal(size=(2, 4, 1, 1)).astype(np.float32) for n in ("w3", "w4", "w5")})
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1"),
        helper.make_node("Conv", ["x", "w2"], ["c2"], name="c2"),
        helper.make_node("Concat", ["c1", "c2"], ["cat"], name="cat", axis=1),
        helper.make_node("Relu", ["cat"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w3"], ["c3"], name="c3"),
        helper.make_node("MaxPool", ["cat"], ["p"], name="pool", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["p", "w4"], ["c4"], name="c4"),
        helper.make_node("Conv", ["p", "w5"], ["c5"], name="c5"),
        helper.make_node("Add", ["c3", "c4"], ["s"], name="add"),
        helper.make_node("Add", ["s", "c5"], ["y"], name="add2"),
    ]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])], w)
    model = import_model(proto)
    flexible = SearchSpace.build(model, load_profile("flexible"))   # no shared-scale ops
    assert sorted(g.layers for g in flexible.groups) == [("c1", "c2"), ("c3", "c4", "c5")]
    npu = SearchSpace.build(model, load_profile("npu"))             # Concat shares a scale
    assert sorted(g.layers for g in npu.groups) == [("c1", "c2"), ("c3", "c4", "c5")]


def test_concat_inputs_from_different_sources_are_grouped_only_when_profile_says() -> None:
    # a -> ca; b -> cb; Concat(a, b) -> cc: with Concat sharing a scale, a and b share one.
    rng = np.random.default_rng(1)
    w = {"wa": rng.normal(size=(2, 2, 1, 1)).astype(np.float32),
         "wb": rng.normal(size=(2, 2, 1, 1)).astype(np.float32),
         "wc": rng.normal(size=(2, 4, 1, 1)).astype(np.float32),
         "w0": rng.normal(size=(2, 2, 1, 1)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="c0"),
        helper.make_node("Relu", ["x"], ["b"], name="relu"),
        helper.make_node("Conv", ["a", "wa"], ["ya"], name="ca"),
        helper.make_node("Conv", ["b", "wb"], ["yb"], name="cb"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "wc"], ["yc"], name="cc"),
        helper.make_node("Sum", ["ya", "yb", "yc"], ["y"], name="sum"),
    ]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])], w)
    model = import_model(proto)
    flexible = SearchSpace.build(model, load_profile("flexible"))
    # Relu is scale preserving: x and b = Relu(x) share a domain, so c0 and cb group.
    assert sorted(g.layers for g in flexible.groups if len(g.layers) > 1) == [("c0", "cb")]
    npu = SearchSpace.build(model, load_profile("npu"))
    assert sorted(g.layers for g in npu.groups if len(g.layers) > 1) == [("c0", "ca", "cb", "cc")]


def test_budget_from_profile_uses_w8a8_bops_ratio_and_memory_limits() -> None:
    model = import_model(conv_chain())
    npu = load_profile("npu")
    budget = Budget.from_profile(npu, model)
    assert budget.bops == int(0.5 * model.total_macs * 64)
    assert budget.peak_activation_bytes == 8 * 2**20 and budget.weight_bytes is None
    mcu_budget = Budget.from_profile(load_profile("mcu"), model)
    assert mcu_budget.weight_bytes == 2 * 2**20 and mcu_budget.bops is None
    costs = CostModel(model, npu).cost(SearchSpace.build(model, npu).uniform(Option(8, 8)))
    lines = {line.resource: line for line in budget.check(costs)}
    assert not lines["bops"].fits and lines["peak_activation_bytes"].fits


def test_other_constants_count_toward_weight_bytes() -> None:
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["xr"], name="reshape"),
             helper.make_node("MatMul", ["xr", "w"], ["y"], name="mm")]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                       {"shape": np.array([2, 3], np.int64),
                        "w": rng.normal(size=(3, 4)).astype(np.float32)})
    costs = CostModel(import_model(proto), load_profile("flexible"))
    assert costs.other_constant_bytes == 2 * 8
    assert costs.weight_bytes(SearchSpace.build(costs.model, costs.profile).uniform(
        Option(8, 8))) == 16 + 12 + 4 * 4
