"""Baseline methods on a tiny model: each meets the budget and returns a valid policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import conv_chain_files

from smpq_onnx.cli.main import cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return conv_chain_files(tmp_path_factory.mktemp("tiny"))


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


def test_uniform_measures_every_option_at_the_highest_bit_product_that_fits(
        tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """At 0.25x W8A8 BOPs W2A8, W4A4 and W8A2 (bit product 16) all fit: each is measured and the
    best kept, rather than the one with more activation bits."""
    model, data = tiny
    result = CliRunner().invoke(cli, [
        "search", str(model), "--data", str(data), "--metric", "sqnr", "--method", "uniform",
        "--budget-bops-ratio", "0.25", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    measured = {}
    for candidate in report["candidates"]:
        (option,) = {(b["w_bits"], b["a_bits"]) for b in candidate["policy"].values()}
        measured[option] = candidate["score"]
    assert set(measured) == {(2, 8), (4, 4), (8, 2)}
    best = max(measured, key=lambda option: measured[option])
    assert {(b["w_bits"], b["a_bits"]) for b in report["policy"].values()} == {best}


def test_evolution_is_deterministic_within_its_evaluations_and_the_budget(
        tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    reports = []
    for run in ("a", "b"):
        result = CliRunner().invoke(cli, [
            "search", str(model), "--data", str(data), "--metric", "sqnr", "--method",
            "evolution", "--budget-bops-ratio", "0.3", "--max-evals", "40", "--seed", "3",
            "--out", str(tmp_path / run), "--json"])
        assert result.exit_code == 0, result.stderr
        reports.append(json.loads(result.stdout))
    first, second = reports
    assert first["policy"] == second["policy"] and first["final"] == second["final"]
    assert all(line["fits"] for line in first["budget"])
    details = first["method_details"]
    assert details["evaluated"] == first["evaluations"] <= 40
    assert details["cycles"] >= 40 - 24  # the population, then one child per cycle
    # The result is the best policy it evaluated.
    assert first["method_details"]["evaluated"] == len(first["evaluated_policies"])
    best = max(p["score"] for p in first["evaluated_policies"])
    assert first["final_fast_engine"] == pytest.approx(best)


def test_refinement_spends_the_rest_of_the_evaluations_and_never_loses(
        tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    reports = {}
    for share in ("0", "0.5"):
        result = CliRunner().invoke(cli, [
            "search", str(model), "--data", str(data), "--metric", "sqnr",
            "--budget-bops-ratio", "0.3", "--max-evals", "160", "--refine-share", share,
            "--out", str(tmp_path / share), "--json"])
        assert result.exit_code == 0, result.stderr
        reports[share] = json.loads(result.stdout)
    plain, refined = reports["0"], reports["0.5"]
    details = refined["method_details"]
    assert details["refine_evaluations"] >= 1
    assert refined["evaluations"] <= 160
    assert all(line["fits"] for line in refined["budget"])
    # The climb starts from the selection: its answer is the selection's unless a move beat
    # it on the emitted model, so it is never below the selection it started from.
    start = max(c["score"] for c in refined["candidates"][:-1]) if details["refine_kept"] \
        else refined["final"]
    assert refined["final"] >= start
    assert "refine_evaluations" not in plain["method_details"]


def test_refine_share_is_checked(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    for args, message in ((["--refine-share", "1.0"], "must be in [0, 1)"),
                          (["--refine-share", "0.3", "--method", "amp"], "works with --method")):
        result = CliRunner().invoke(cli, ["search", str(model), "--data", str(data), *args,
                                          "--out", str(tmp_path)])
        assert result.exit_code == 2 and message in result.stderr
