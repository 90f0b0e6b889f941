"""The emitted QDQ model: standard ops, annotations, and the evaluator's numerics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from test_fakequant import make_evaluator

from smpq_onnx.cli.main import cli
from smpq_onnx.export.emit import emit_qdq_model, encodings
from smpq_onnx.quant.options import FP32, Option
from smpq_onnx.quant.policy import Policy


def run(model: onnx.ModelProto, x: np.ndarray, level: ort.GraphOptimizationLevel) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


LEVELS = [ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8, 16])
def test_uniform_policies_emit_standard_qdq_with_the_evaluator_numerics(bits: int) -> None:
    evaluator, _, x = make_evaluator("all")
    policy = Policy({name: Option(bits, bits) for name in ("conv1", "conv2", "fc")})
    model = emit_qdq_model(evaluator.model, policy, evaluator.calibration, profile="flexible")
    onnx.checker.check_model(model, full_check=True)
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert model.opset_import[0].version == (21 if bits == 16 else 17)
    assert model.ir_version <= 13

    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 3 + 3 + 2
    assert ops.count("Clip") == (0 if bits in (8, 16) else 3)
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    codes = initializers[f"w1_smpq_w{bits}_quantized"]
    assert codes.dtype == (np.int16 if bits == 16 else np.int8)
    assert np.abs(codes.astype(np.int64)).max() <= 2 ** (bits - 1) - 1
    assert "w1" not in initializers  # the float weight is gone

    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["smpq.policy"])["conv2"] == {"w_bits": bits, "a_bits": bits}
    assert meta["smpq.profile"] == "flexible" and meta["smpq.version"]
    conv2 = next(n for n in model.graph.node if n.name == "conv2")
    assert {p.key: p.value for p in conv2.metadata_props} == {
        "smpq.w_bits": str(bits), "smpq.a_bits": str(bits)}

    expected = evaluator.outputs(policy)
    for level in LEVELS:
        actual = run(model, x, level)
        np.testing.assert_allclose(actual, expected, rtol=0,
                                   atol=1e-4 * np.abs(expected).max())


def test_mixed_policy_float_layers_and_native_int4() -> None:
    evaluator, _, x = make_evaluator("all")
    policy = Policy({"conv1": Option(4, 6), "conv2": FP32, "fc": Option(3, 5)})
    model = emit_qdq_model(evaluator.model, policy, evaluator.calibration, profile="flexible",
                           native_int4=True)
    onnx.checker.check_model(model)
    codes = next(i for i in model.graph.initializer if i.name == "w1_smpq_w4_quantized")
    assert codes.data_type == onnx.TensorProto.INT4 and model.opset_import[0].version == 21
    assert [n.op_type for n in model.graph.node].count("QuantizeLinear") == 2
    expected = evaluator.outputs(policy)
    for level in LEVELS:
        np.testing.assert_allclose(run(model, x, level), expected, rtol=0,
                                   atol=1e-4 * np.abs(expected).max())


def test_encodings_hold_scale_offset_and_range() -> None:
    evaluator, _, _ = make_evaluator("all")
    policy = Policy({"conv1": Option(4, 6), "conv2": Option(8, 8), "fc": FP32})
    data = encodings(evaluator.model, policy, evaluator.calibration)
    (x_enc,) = data["activation_encodings"]["x"]
    p = evaluator.calibration.activation("x", 6)
    assert x_enc["bitwidth"] == 6 and x_enc["scale"] == p.scale and x_enc["offset"] == -p.zero_point
    assert x_enc["min"] <= 0 <= x_enc["max"]
    assert len(data["param_encodings"]["w1"]) == 4 and "w3" not in data["param_encodings"]
    assert "f" not in data["activation_encodings"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("optimization", ["all", "basic"])
def test_apply_bundled_example_random_policy_reproduces_the_evaluator(
        tmp_path: Path, optimization: str) -> None:
    from smpq_onnx.example import example_model_path
    from smpq_onnx.hardware.profile import load_profile
    from smpq_onnx.model.importer import import_model
    from smpq_onnx.strategy.space import SearchSpace

    space = SearchSpace.build(import_model(example_model_path()), load_profile("flexible"))
    rng = np.random.default_rng(3)
    choices = [2, 3, 4, 5, 6, 7, 8]
    policy = {}
    for group in space.groups:  # layers of a group share their activation bits
        a_bits = int(rng.choice(choices))
        for name in group.layers:
            policy[name] = {"w_bits": int(rng.choice(choices)), "a_bits": a_bits}
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(policy))
    out = tmp_path / "out" / "model.qdq.onnx"
    code, stdout, stderr = invoke("apply", "--policy", str(policy_path), "--out", str(out),
                                  "--optimization", optimization, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["match"] and report["emitted"] == report["deployed"]
    assert report["evaluator"] == report["emitted"]  # on this example the engines agree exactly
    assert out.is_file() and Path(report["encodings"]).is_file()
    onnx.checker.check_model(onnx.load(str(out)))
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.qdq.encodings.json",
                                                          "model.qdq.onnx"]


@pytest.mark.parametrize("args,message", [
    (["--bits", "W2A2", "--hw", "mcu"], "W2A2 is not allowed"),
    (["--bits", "W8A8", "--optimization", "fastest"], "Invalid value for '--optimization'"),
    (["--policy", "MISSING.json"], "policy file not found"),
    (["--bits", "W8A8", "--default-bits", "W4A4"], "--default-bits only completes"),
])
def test_apply_errors(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "m.onnx"
    code, _, err = invoke("apply", *args, "--out", str(out))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_apply_needs_calibration_data_for_a_user_model(tmp_path: Path) -> None:
    from conftest import conv_chain

    path = tmp_path / "m.onnx"
    onnx.save(conv_chain(), str(path))
    code, _, err = invoke("apply", str(path), "--bits", "W8A8", "--out", str(tmp_path / "q.onnx"))
    assert code == 2 and "needs calibration data" in err
