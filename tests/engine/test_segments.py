"""Segmented evaluation: cuts at single-tensor boundaries, prefix reuse that changes nothing."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from conftest import make_model
from onnx import TensorProto, helper

from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.engine.prefix_cache import BoundaryCache
from smpq_onnx.engine.segments import plan_segments
from smpq_onnx.model.importer import import_model
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.calibration import Calibration, CalibrationSettings, collect_histograms
from smpq_onnx.quant.options import FP32, Option
from smpq_onnx.quant.policy import Policy


def residual_model():
    """conv0 -> relu -> [conv1 -> relu -> conv2 -> add(relu0)] -> conv3 -> GAP -> Gemm."""
    rng = np.random.default_rng(0)
    inits = {
        "w0": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "w1": rng.normal(size=(4, 4, 3, 3)).astype(np.float32) * 0.3,
        "w2": rng.normal(size=(4, 4, 1, 1)).astype(np.float32),
        "b2": rng.normal(size=4).astype(np.float32),
        "w3": rng.normal(size=(8, 4, 1, 1)).astype(np.float32),
        "w4": rng.normal(size=(8, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["r0", "c2"], ["a"], name="add"),
        helper.make_node("Conv", ["a", "w3"], ["c3"], name="conv3"),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w4"], ["y"], name="fc"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            ["N", 3, 6, 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)


def make_evaluator(optimization: str = "basic", **options: int) -> Evaluator:
    model = import_model(residual_model())
    x = np.random.default_rng(1).normal(size=(48, 3, 6, 6)).astype(np.float32)
    runtime = RuntimeConfig(provider="cpu", optimization=optimization)  # type: ignore[arg-type]
    hist = collect_histograms(model, [{"x": x[:16]}], [la.activation for la in model.layers],
                              runtime=runtime)
    return Evaluator(model, Calibration(model, hist, CalibrationSettings()),
                     Dataset({"x": x[16:]}, None, "test"), BUILTIN_METRICS["sqnr"],
                     runtime=runtime, batch_size=8, **options)


def policy(options: list[Option]) -> Policy:
    names = ["conv0", "conv1", "conv2", "conv3", "fc"]
    return Policy(dict(zip(names, options, strict=True)))


def test_cuts_fall_on_single_live_tensors_never_inside_the_residual_block() -> None:
    model = import_model(residual_model())
    evaluator = make_evaluator(max_segments=16)
    plan = evaluator.plan
    boundaries = [seg.output for seg in plan.segments[:-1]]
    assert boundaries
    # Single live tensors that a layer reads: r0, a and f (c0, c3, g would split fusions).
    assert set(boundaries) <= {"r0", "a", "f"}
    assert all(seg.layers for seg in plan.segments)
    assert [la.name for seg in plan.segments for la in seg.layers] == [
        la.name for la in model.layers]
    assert plan.segments[-1].output == "y"
    assert all(seg.inputs == (prev.output,) for prev, seg in pairwise(plan.segments))


def test_segment_count_and_boundary_size_are_bounded() -> None:
    model = import_model(residual_model())
    from onnx_ir import to_proto

    proto = to_proto(model.ir_model)
    assert len(plan_segments(proto, model.layers, model.shapes, n_samples=32,
                             max_boundary_bytes=1 << 30, max_segments=2)) == 2
    assert len(plan_segments(proto, model.layers, model.shapes, n_samples=32,
                             max_boundary_bytes=1 << 30, max_segments=1)) == 1
    # r0 and a are 4x6x6 floats (576 B per sample); f is 8 floats.
    small = plan_segments(proto, model.layers, model.shapes, n_samples=32,
                          max_boundary_bytes=32 * 100, max_segments=16)
    assert [seg.output for seg in small.segments] == ["f", "y"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmented_outputs_equal_the_whole_evaluation_graph(seed: int) -> None:
    evaluator = make_evaluator(max_segments=16)
    assert len(evaluator.plan) >= 3
    rng = np.random.default_rng(seed)
    bits = [2, 3, 4, 6, 8, 16, 32]
    chosen = policy([Option(int(rng.choice(bits)), int(rng.choice(bits))) for _ in range(5)])
    whole = evaluator._run(evaluator.session(chosen))
    np.testing.assert_array_equal(evaluator.outputs(chosen), whole)


def test_prefix_reuse_changes_no_result_and_skips_work() -> None:
    first = policy([Option(4, 4)] * 5)
    last_changed = policy([Option(4, 4)] * 4 + [Option(8, 8)])
    early_changed = policy([Option(8, 8)] + [Option(4, 4)] * 4)
    forward = make_evaluator(max_segments=16)
    outputs = {p: forward.outputs(p) for p in (first, last_changed, early_changed)}
    assert forward.boundaries.hits >= 1  # last_changed reused first's prefix
    created = forward.sessions.created
    assert created < 3 * len(forward.plan)  # unchanged segments kept their sessions
    backward = make_evaluator(max_segments=16)
    for p in (early_changed, last_changed, first):
        np.testing.assert_array_equal(backward.outputs(p), outputs[p])
    cold = make_evaluator(max_segments=16, prefix_cache_bytes=0, session_cache=0)
    for p in (last_changed, first):
        np.testing.assert_array_equal(cold.outputs(p), outputs[p])
    assert cold.boundaries.hits == 0


def test_full_optimization_is_deterministic_whatever_ran_before() -> None:
    a = make_evaluator("all", max_segments=16)
    b = make_evaluator("all", max_segments=16)
    p = policy([Option(4, 8), Option(3, 3), Option(8, 8), Option(2, 4), FP32])
    q = p.replace(fc=Option(8, 8))
    a.outputs(p)
    np.testing.assert_array_equal(a.outputs(q), b.outputs(q))


def test_boundary_cache_keeps_bytes_under_its_cap_in_lru_order() -> None:
    cache = BoundaryCache(max_bytes=3 * 400)
    arrays = [np.zeros(100, np.float32)]  # 400 B
    for key in "abc":
        cache.put(key, arrays)
    cache.touch("a")
    cache.put("d", arrays)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.bytes == 3 * 400 and len(cache) == 3
    cache.put("huge", [np.zeros(1000, np.float32)])  # larger than the cap: not kept
    assert cache.get("huge") is None and cache.bytes <= cache.max_bytes


def test_a_paired_comparison_sees_through_the_noise_both_policies_share() -> None:
    evaluator = make_evaluator()
    reference = evaluator.reference
    noise = np.random.default_rng(3).normal(size=reference.shape).astype(np.float32)
    worse, better = reference + noise, reference + 0.9 * noise
    assert evaluator.paired_win_rate(worse, worse) == 0.5  # ties count half
    assert evaluator.paired_win_rate(better, worse) == 1.0
    assert evaluator.paired_win_rate(worse, better) == 0.0
    # Two policies' outputs with independent noise of one size: no confident winner.
    other = reference + np.random.default_rng(4).normal(size=reference.shape)
    assert 0.02 < evaluator.paired_win_rate(other.astype(np.float32), worse) < 0.98
