"""Inputs beyond one batched image: a state batched on axis 1, a scalar fed to every batch,
integer token ids, a batch fixed at 4 with a partial last batch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import smpq_onnx
from smpq_onnx.api.context import build_context
from smpq_onnx.cli.main import cli
from smpq_onnx.engine.dataset import InputSpec, load_dataset
from smpq_onnx.errors import DataError
from smpq_onnx.model.shapes import batch_axes
from smpq_onnx.quant.weight_rounding import RoundingSettings

RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)
TABLE = RNG.normal(size=(20, 8)).astype(np.float32)
W2 = RNG.normal(size=(8, 3)).astype(np.float32)
FAST = {"rounding": "nearest", "bias_correction": False, "provider": "cpu"}


def _model(nodes: list, inputs: list, output: onnx.ValueInfoProto,
           weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [output],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def state_model() -> onnx.ModelProto:
    """y[1, N, 3] = x[N, 4] @ W + h[1, N, 3]: the state's and the output's batch on axis 1."""
    return _model(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="fc"),
         helper.make_node("Add", ["xw", "h"], ["y"], name="add")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "N", 3])],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "N", 3]), {"W": W})


def scale_model() -> onnx.ModelProto:
    """y[N, 3] = (x @ W) * scale, scale a scalar input."""
    return _model(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="fc"),
         helper.make_node("Mul", ["xw", "scale"], ["y"], name="mul")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]), {"W": W})


def token_model() -> onnx.ModelProto:
    """y[N, 3] = mean over the 5 tokens of embedding[ids] @ W2, ids int64."""
    return _model(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
         helper.make_node("MatMul", ["emb", "W2"], ["proj"], name="fc"),
         helper.make_node("ReduceMean", ["proj"], ["y"], name="pool", axes=[1], keepdims=0)],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
        {"table": TABLE, "W2": W2})


def fixed_model() -> onnx.ModelProto:
    """y[4, 3] = x[4, 4] @ W: the batch fixed at 4."""
    return _model(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3]), {"W": W})


def write(tmp_path: Path, model: onnx.ModelProto, **arrays: np.ndarray) -> tuple[Path, Path]:
    model_path, data_path = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, model_path)
    np.savez(data_path, **arrays)  # type: ignore[arg-type]
    return model_path, data_path


def one_by_one(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return [session.run(None, feed)[0] for feed in feeds]


def reference(model_path: Path, data_path: Path, metric: str) -> np.ndarray:
    context = build_context(model_path, hw="flexible", data=data_path, calib_data=data_path,
                            metric=metric,
                            rounding=RoundingSettings(method="nearest", bias_correction=False))
    return context.evaluator.reference


def test_batch_axes_follow_the_shared_symbol() -> None:
    assert batch_axes({"x": ("batch", 64), "state": (2, "batch", 128), "sr": ()}) == {
        "x": 0, "state": 1, "sr": None}
    assert batch_axes({"state": (2, "batch", 128)}) == {"state": 1}
    assert batch_axes({"x": ("N", 3, "H", "W")}) == {"x": 0}
    assert batch_axes({"x": (1, 3, 224, 224), "c": (2, 1, 8)}) == {"x": 0, "c": None}
    assert batch_axes({"x": ("N", 4), "c": (2, 3)}) == {"x": 0, "c": None}


def test_a_state_batched_on_axis_1(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = RNG.normal(size=(10, 4)).astype(np.float32)
    h = RNG.normal(size=(10, 1, 3)).astype(np.float32)  # samples of h's shape without axis 1
    model_path, data_path = write(tmp_path, state_model(), x=x, h=h)
    with caplog.at_level(logging.INFO):
        result = smpq_onnx.evaluate(model_path, data=data_path, calib_data=data_path,
                                    bits="W8A8", metric="cosine", **FAST)
    assert "input 'x': batch on axis 0; input 'h': batch on axis 1" in caplog.text
    assert result.n == 10 and result.fp32 == pytest.approx(1.0)
    assert result.quantized > 0.99
    expected = one_by_one(state_model(), [{"x": x[i:i + 1], "h": h[i][:, None]}
                                          for i in range(10)])
    got = reference(model_path, data_path, "cosine")
    assert got.shape == (10, 1, 3)
    np.testing.assert_allclose(got, np.stack([e[:, 0] for e in expected]), rtol=1e-5)


def test_the_rounding_stage_takes_a_state_batched_on_axis_1(tmp_path: Path) -> None:
    x = RNG.normal(size=(12, 4)).astype(np.float32)
    h = RNG.normal(size=(12, 1, 3)).astype(np.float32)
    model_path, data_path = write(tmp_path, state_model(), x=x, h=h)
    result = smpq_onnx.evaluate(model_path, data=data_path, calib_data=data_path,
                                bits="W8A8", metric="cosine", provider="cpu")
    assert result.n == 12 and result.quantized > 0.99


def test_a_scalar_input_is_fed_to_every_batch(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    x = RNG.normal(size=(10, 4)).astype(np.float32)
    model_path, data_path = write(tmp_path, scale_model(), x=x,
                                  scale=np.array(2.5, np.float32))
    with caplog.at_level(logging.INFO):
        result = smpq_onnx.evaluate(model_path, data=data_path, calib_data=data_path,
                                    bits="W8A8", metric="agreement", batch_size=3, **FAST)
    assert "input 'scale': no batch axis, fed to every batch" in caplog.text
    assert result.n == 10 and result.fp32 == pytest.approx(1.0)
    expected = one_by_one(scale_model(), [{"x": x[i:i + 1], "scale": np.array(2.5, np.float32)}
                                          for i in range(10)])
    np.testing.assert_allclose(reference(model_path, data_path, "agreement"),
                               np.concatenate(expected), rtol=1e-5)


def test_a_scalar_given_per_sample_is_one_line(tmp_path: Path) -> None:
    _, data_path = write(tmp_path, scale_model(), x=np.zeros((4, 4), np.float32),
                         scale=np.ones(4, np.float32))
    with pytest.raises(DataError) as caught:
        load_dataset(data_path, InputSpec.of_proto(scale_model()))
    assert "without a sample axis" in str(caught.value) and "\n" not in str(caught.value)


def test_integer_token_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ids = RNG.integers(0, 20, size=(10, 5)).astype(np.int64)
    model_path, data_path = write(tmp_path, token_model(), ids=ids)
    with caplog.at_level(logging.INFO):
        result = smpq_onnx.evaluate(model_path, data=data_path, calib_data=data_path,
                                    bits="W8A8", metric="agreement", **FAST)
    assert "input 'ids': batch on axis 0 (int64, fed as is, not quantized)" in caplog.text
    assert list(result.policy) == ["fc"]
    assert result.n == 10 and result.fp32 == pytest.approx(1.0)
    expected = one_by_one(token_model(), [{"ids": ids[i:i + 1]} for i in range(10)])
    np.testing.assert_allclose(reference(model_path, data_path, "agreement"),
                               np.concatenate(expected), rtol=1e-5)


def test_float_data_for_an_integer_input_is_one_line(tmp_path: Path) -> None:
    _, data_path = write(tmp_path, token_model(), ids=np.zeros((4, 5), np.float32))
    with pytest.raises(DataError) as caught:
        load_dataset(data_path, InputSpec.of_proto(token_model()))
    assert "the model takes int64" in str(caught.value)


@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_a_batch_fixed_at_4_pads_the_last_batch(tmp_path: Path, rounding: str) -> None:
    x = RNG.normal(size=(10, 4)).astype(np.float32)
    model_path, data_path = write(tmp_path, fixed_model(), x=x)
    result = smpq_onnx.evaluate(model_path, data=data_path, calib_data=data_path,
                                bits="W8A8", metric="agreement", rounding=rounding,
                                bias_correction=False, provider="cpu")
    assert result.n == 10 and result.fp32 == pytest.approx(1.0)
    np.testing.assert_allclose(reference(model_path, data_path, "agreement"), x @ W,
                               rtol=1e-5, atol=1e-6)


def test_cli_eval_of_a_batch_fixed_at_4_with_10_samples(tmp_path: Path) -> None:
    model_path, data_path = write(tmp_path, fixed_model(),
                                  x=RNG.normal(size=(10, 4)).astype(np.float32))
    result = CliRunner().invoke(cli, ["eval", str(model_path), "--data", str(data_path),
                                      "--calib-data", str(data_path), "--bits", "W8A8",
                                      "--metric", "agreement", "--rounding", "nearest",
                                      "--no-bias-correction", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 10 and report["fp32"] == pytest.approx(1.0)
