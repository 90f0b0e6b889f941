"""The budget-local SMPQ search on a tiny model: fits every budget, never below the uniform
guard, windows around the incumbent, the paper's game still one flag away."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import conv_chain_files

from smpq_onnx.cli.main import cli

W8A8_BOPS = (6912 + 1536 + 1920) * 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return conv_chain_files(tmp_path_factory.mktemp("tiny"))


def search(tiny: tuple[Path, Path], out: Path, *extra: str) -> dict:
    model, data = tiny
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data), "--metric",
                                      "sqnr", "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("ratio", [0.12, 0.2, 0.3, 0.45, 0.7])
def test_the_local_game_fits_the_budget_and_never_loses_to_the_best_uniform(
        tiny: tuple[Path, Path], tmp_path: Path, ratio: float) -> None:
    common = ["--budget-bops-ratio", str(ratio), "--max-evals", "80"]
    local = search(tiny, tmp_path / "local", *common)
    uniform = search(tiny, tmp_path / "uniform", *common, "--method", "uniform")
    assert local["settings"]["game"] == "local"
    assert all(line["fits"] for line in local["budget"])
    assert local["costs"]["bops"] <= ratio * W8A8_BOPS
    assert local["final"] >= uniform["final"]
    assert local["evaluations"] <= 80 + 6  # the budget, plus the guard's uniform options
    assert local["contributions"]  # the last window's players


def test_windows_and_samples_are_the_users_knobs(tiny: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    one = search(tiny, tmp_path / "one", "--rounds", "1", "--samples", "1")
    two = search(tiny, tmp_path / "two", "--rounds", "2", "--samples", "1")
    assert one["method_details"]["windows"] == 1 and two["method_details"]["windows"] == 2
    assert two["evaluations"] > one["evaluations"]


def test_the_papers_game_is_kept_behind_a_flag(tiny: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    paper = search(tiny, tmp_path / "paper", "--game", "global", "--samples", "1",
                   "--rounds", "1")
    assert paper["settings"]["game"] == "global"
    # Its players cover every legal width of a side, not one step around a center.
    widths = {c["w_bits"] for c in paper["contributions"] if c["side"] == "w"}
    assert widths == {2, 3, 4, 5, 6, 7, 8}
    model, data = tiny
    result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data),
                                      "--semantics", "mix", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "add --game global" in result.output.strip().splitlines()[-1]
