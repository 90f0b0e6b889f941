"""The default metric follows the output: class scores get agreement, other outputs cosine;
searches on class scores maximize KL to FP32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import conv_chain_files, make_model, run_ort
from onnx import TensorProto, helper

import smpq_onnx
from smpq_onnx.cli.main import cli
from smpq_onnx.engine.metrics import BUILTIN_METRICS, resolve_metric, search_utility
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


def test_searches_maximize_kl_on_class_metrics_and_any_other_metric_itself() -> None:
    for name in ("top1", "agreement", "kl"):
        assert search_utility(BUILTIN_METRICS[name]).name == "kl"
    for name in ("cosine", "sqnr"):
        assert search_utility(BUILTIN_METRICS[name]) is BUILTIN_METRICS[name]


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


def test_search_and_apply_default_to_kl_without_labels_and_eval_to_agreement(
        tmp_path: Path) -> None:
    """Agreement on a few samples moves in whole samples, too coarse for the search's
    single-layer measurements: search (and apply, which reproduces it) score KL to FP32;
    eval keeps the readable agreement."""
    model, data = conv_chain_files(tmp_path)
    common = ["--data", str(data), "--rounding", "nearest", "--json"]
    found = CliRunner().invoke(cli, ["search", str(model), *common, "--method", "uniform",
                                     "--out", str(tmp_path / "run")])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["metric"] == "kl"
    applied = CliRunner().invoke(cli, ["apply", str(model), *common, "--bits", "W8A8",
                                       "--out", str(tmp_path / "m.onnx")])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["metric"] == "kl"
    evaluated = CliRunner().invoke(cli, ["eval", str(model), *common, "--bits", "W8A8"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["metric"] == "agreement"


def test_search_with_labels_maximizes_kl_and_reports_top1_unless_a_metric_is_named(
        tmp_path: Path) -> None:
    """Top-1 on a few samples moves in whole samples: the search's utility is KL to FP32,
    its report headed by top-1 (what apply checks); ``--metric top1`` searches on top-1."""
    model, data = conv_chain_files(tmp_path)
    x = np.load(data)["x"]
    logits = run_ort(onnx.load(str(model)), {"x": x})[0]
    np.savez(data, x=x, y=logits.argmax(1))  # FP32 top-1 100 %
    common = ["--data", str(data), "--rounding", "nearest", "--json", "--method", "uniform"]

    def searched(*extra: str) -> dict:
        found = CliRunner().invoke(cli, ["search", str(model), *common, *extra,
                                         "--out", str(tmp_path / f"run{len(extra)}")])
        assert found.exit_code == 0, found.output
        return json.loads(found.stdout)

    default = searched()
    assert default["metric"] == "top1" and default["search_utility"]["metric"] == "kl"
    assert default["search_utility"]["fp32"] == pytest.approx(0.0, abs=1e-9)
    assert all(c["score"] <= 1e-9 for c in default["candidates"])  # KL to FP32, not top-1
    evaluated = smpq_onnx.evaluate(model, data=data, policy=tmp_path / "run0" / "policy.json",
                                   rounding="nearest", provider="cpu")
    assert evaluated.metric == "top1"
    assert default["final"] == pytest.approx(evaluated.deployed, abs=1e-9)
    named = searched("--metric", "top1")
    assert named["metric"] == "top1" and "search_utility" not in named
    assert named["fp32"] == 1.0 and all(0.5 < c["score"] <= 1.0 for c in named["candidates"])
