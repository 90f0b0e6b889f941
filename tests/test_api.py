"""The public Python API: only ``smpq_onnx`` and ``smpq_onnx.errors`` are imported here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import conv_chain

import smpq_onnx
from smpq_onnx.errors import DataError, InvalidArgumentError, PolicyError, ProfileError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("api")
    model = folder / "chain.onnx"
    onnx.save(conv_chain(), str(model))
    data = folder / "data.npz"
    x = np.random.default_rng(3).normal(size=(48, 3, 8, 8)).astype(np.float32)
    np.savez(data, x=x)
    return model, data


def cli_json(*args: str) -> dict:
    from smpq_onnx.cli.main import cli

    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_profile_returns_the_data_the_cli_prints(tiny: tuple[Path, Path]) -> None:
    model, _ = tiny
    result = smpq_onnx.profile(model, hw="flexible", bits="W4A8")
    assert isinstance(result, smpq_onnx.ProfileResult)
    assert [layer["name"] for layer in result.layers] == ["conv1", "conv2", "fc"]
    assert {(layer["w_bits"], layer["a_bits"]) for layer in result.layers} == {(4, 8)}
    assert result.totals["bops"] == sum(layer["bops"] for layer in result.layers)
    assert result.to_json_dict() == cli_json("profile", str(model), "--hw", "flexible",
                                             "--bits", "W4A8")


def test_evaluate_scores_fp32_the_simulation_and_the_emitted_model(
        tiny: tuple[Path, Path]) -> None:
    model, data = tiny
    result = smpq_onnx.evaluate(model, data=data, bits="W8A8", provider="cpu")
    assert isinstance(result, smpq_onnx.EvaluationResult)
    assert result.metric == "agreement" and result.percent
    assert result.fp32 == 1.0 and 0.0 <= result.deployed <= 1.0
    assert result.n == 36  # the last quarter (12 samples) calibrates
    assert set(result.policy.values()) == {smpq_onnx.Option.parse("W8A8")}
    printed = cli_json("eval", str(model), "--data", str(data), "--bits", "W8A8",
                       "--provider", "cpu")
    assert {k: v for k, v in result.to_json_dict().items() if k != "seconds"} == \
        {k: v for k, v in printed.items() if k != "seconds"}


def test_a_policy_can_be_a_mapping_completed_by_default_bits(tiny: tuple[Path, Path]) -> None:
    model, _ = tiny
    result = smpq_onnx.profile(model, hw="flexible", policy={"conv1": "W2A4"},
                               default_bits="W8A8")
    bits = {layer["name"]: (layer["w_bits"], layer["a_bits"]) for layer in result.layers}
    assert bits == {"conv1": (2, 4), "conv2": (8, 8), "fc": (8, 8)}


def test_search_then_apply_writes_a_model_that_reproduces_the_search(
        tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    found = smpq_onnx.search(model, data=data, hw="flexible", budget_bops_ratio=0.5,
                             samples=1, rounds=1, out=tmp_path / "run", provider="cpu")
    assert isinstance(found, smpq_onnx.SearchOutcome)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert found.to_json_dict() == report
    assert found.final == report["final"] and found.target_missed is None
    assert report["budget"] and all(line["fits"] for line in report["budget"])
    applied = smpq_onnx.apply(model, policy=found.policy, data=data,
                              out=tmp_path / "applied.onnx", provider="cpu")
    assert isinstance(applied, smpq_onnx.ApplyResult)
    assert applied.out.exists() and applied.encodings.exists()
    assert applied.check is not None and applied.check.match
    assert applied.check.deployed == pytest.approx(found.final)


@pytest.mark.parametrize(("call", "error"), [
    (lambda m, d: smpq_onnx.profile(m, hw="no-such-device"), ProfileError),
    (lambda m, d: smpq_onnx.profile(m, hw="flexible", bits="W8A8", policy={"conv1": "W4A4"}),
     InvalidArgumentError),
    (lambda m, d: smpq_onnx.profile(m, hw="flexible", policy={"nope": "W4A4"},
                                    default_bits="W8A8"), PolicyError),
    (lambda m, d: smpq_onnx.evaluate(m, bits="W8A8"), DataError),
    (lambda m, d: smpq_onnx.evaluate(m, data=d, optimization="fastest"), InvalidArgumentError),
    (lambda m, d: smpq_onnx.search(m, data=d, method="genetic"), InvalidArgumentError),
    (lambda m, d: smpq_onnx.search(m, data=d, budget_bops_ratio=1.5), InvalidArgumentError),
])
def test_bad_arguments_raise_typed_errors(tiny: tuple[Path, Path], call, error) -> None:
    model, data = tiny
    with pytest.raises(error):
        call(model, data)
