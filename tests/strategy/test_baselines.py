"""Baseline methods on a tiny model: each meets the budget and returns a valid policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import conv_chain

from smpq_onnx.cli.main import cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    model = folder / "chain.onnx"
    onnx.save(conv_chain(), str(model))
    rng = np.random.default_rng(0)
    data = folder / "data.npz"
    np.savez(data, x=rng.normal(size=(48, 3, 8, 8)).astype(np.float32))
    return model, data


@pytest.mark.parametrize("method", ["uniform", "random", "context", "amp", "shapley"])
def test_methods_meet_the_budget(tiny: tuple[Path, Path], tmp_path: Path, method: str) -> None:
    model, data = tiny
    result = CliRunner().invoke(cli, [
        "search", str(model), "--data", str(data), "--metric", "sqnr", "--method", method,
        "--budget-bops-ratio", "0.4", "--max-evals", "60", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["method"] == method
    assert all(line["fits"] for line in report["budget"])
    assert report["costs"]["bops"] <= 0.4 * (6912 + 1536 + 1920) * 64
    assert set(report["policy"]) == {"conv1", "conv2", "fc"}
    assert (tmp_path / "model.qdq.onnx").is_file()
    assert bool(report["contributions"]) == (method == "shapley")


def test_amp_prefers_the_cheapest_loss_per_bop(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """AMP never spends bits where a cheaper point on its curve already meets the budget."""
    model, data = tiny
    runner = CliRunner()
    loose = runner.invoke(cli, ["search", str(model), "--data", str(data), "--metric", "sqnr",
                                "--method", "amp", "--budget-bops-ratio", "1.0",
                                "--out", str(tmp_path / "a"), "--json"])
    tight = runner.invoke(cli, ["search", str(model), "--data", str(data), "--metric", "sqnr",
                                "--method", "amp", "--budget-bops-ratio", "0.2",
                                "--out", str(tmp_path / "b"), "--json"])
    assert loose.exit_code == 0 and tight.exit_code == 0
    loose_report, tight_report = json.loads(loose.stdout), json.loads(tight.stdout)
    assert loose_report["costs"]["bops"] == 10368 * 64  # every layer at W8A8: the curve start
    assert tight_report["costs"]["bops"] <= 0.2 * 10368 * 64
    assert tight_report["final"] <= loose_report["final"]


def test_max_drop_needs_shapley(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data), "--method",
                                      "amp", "--max-drop", "1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--max-drop works with --method shapley" in result.stderr
