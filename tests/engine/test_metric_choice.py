"""The default metric follows the output: class scores get agreement, other outputs cosine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import make_model
from onnx import TensorProto, helper

import smpq_onnx
from smpq_onnx.cli.main import cli
from smpq_onnx.engine.metrics import resolve_metric
from smpq_onnx.errors import DataError


def feature_map_model() -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(3->4, 3x3, pad 1) -> y[N,4,8,8]: a feature map, not class scores."""
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["N", 3, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                      {"w": w})


@pytest.fixture
def feature_map(tmp_path: Path) -> tuple[Path, Path]:
    onnx.save(feature_map_model(), str(tmp_path / "fm.onnx"))
    x = np.random.default_rng(1).normal(size=(24, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    return tmp_path / "fm.onnx", tmp_path / "data.npz"


def test_class_scores_default_to_agreement_and_other_outputs_to_cosine() -> None:
    assert resolve_metric(None, has_labels=False, output_shape=(10,)).name == "agreement"
    assert resolve_metric(None, has_labels=True, output_shape=(10,)).name == "top1"
    assert resolve_metric(None, has_labels=False, output_shape=(4, 8, 8)).name == "cosine"
    assert resolve_metric(None, has_labels=True, output_shape=(32, 384)).name == "cosine"
    assert resolve_metric(None, has_labels=False, output_shape=None).name == "agreement"
    with pytest.raises(DataError, match="compares class scores"):
        resolve_metric("agreement", has_labels=False, output_shape=(4, 8, 8))
    assert resolve_metric("sqnr", has_labels=False, output_shape=(4, 8, 8)).name == "sqnr"


def test_a_feature_map_model_is_evaluated_by_cosine(feature_map: tuple[Path, Path]) -> None:
    model, data = feature_map
    result = smpq_onnx.evaluate(model, data=data, bits="W8A8", rounding="nearest",
                                bias_correction=False, provider="cpu")
    assert result.metric == "cosine"
    assert result.fp32 == pytest.approx(1.0)
    assert 0.99 < result.quantized <= 1.0 + 1e-6


def test_agreement_on_a_feature_map_is_a_one_line_error(feature_map: tuple[Path, Path]) -> None:
    model, data = feature_map
    result = CliRunner().invoke(cli, ["eval", str(model), "--data", str(data), "--metric",
                                      "agreement", "--rounding", "nearest"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smpq-onnx: error: metric 'agreement'")
