"""`smpq-onnx search` end to end on the bundled example: budget, fidelity, resume, seeds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.example import example_data_path, example_model_path
from smpq_onnx.model.importer import import_model

FAST = ["--samples", "2", "--rounds", "1"]


def search(out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "smpq_onnx", "search", "--out", str(out),
                             "--json", *args], capture_output=True, text=True, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def half_bops_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("search")
    report = json.loads(search(out, "--budget-bops-ratio", "0.5", *FAST).stdout)
    return out, report


def test_emitted_model_meets_the_budget_from_its_own_annotations(half_bops_run) -> None:
    out, report = half_bops_run
    model = onnx.load(str(out / "model.qdq.onnx"))
    onnx.checker.check_model(model)
    macs = {layer.name: layer.macs for layer in import_model(example_model_path()).layers}
    bops = 0
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if "smpq.w_bits" in meta:
            bops += macs[node.name] * int(meta["smpq.w_bits"]) * int(meta["smpq.a_bits"])
    assert bops == report["costs"]["bops"]
    assert bops <= 0.5 * sum(macs.values()) * 64
    policy = json.loads({p.key: p.value for p in model.metadata_props}["smpq.policy"])
    assert policy == json.loads((out / "policy.json").read_text())


def test_emitted_model_reproduces_the_report_and_beats_uniform_w4a8(half_bops_run) -> None:
    out, report = half_bops_run
    data = np.load(example_data_path())
    x, y = data["x"][:750], data["y"][:750]  # the evaluation split (the rest calibrates)
    session = ort.InferenceSession(str(out / "model.qdq.onnx"),
                                   providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"input": x[i:i + 64]})[0]
                             for i in range(0, len(x), 64)])
    fresh = BUILTIN_METRICS["top1"](logits, logits, y)
    assert fresh == pytest.approx(report["final"], abs=0.001)
    # The search maximized KL to FP32; the report is headed by the labels' top-1.
    assert report["metric"] == "top1" and report["search_utility"]["metric"] == "kl"
    w4a8 = subprocess.run([sys.executable, "-m", "smpq_onnx", "eval", "--bits", "W4A8",
                           "--json"], capture_output=True, text=True, check=True)
    assert report["final"] >= json.loads(w4a8.stdout)["deployed"]
    assert report["final_engine"] == "emitted QDQ model" and report["deployed_evaluations"] >= 1
    for name in ("report.md", "report.json", "contributions.png", "bits_per_layer.png",
                 "metric_vs_bops.png", "model.qdq.encodings.json"):
        assert (out / name).stat().st_size > 0
    # The last window's players: at most two steps up per side for each of the 8 units.
    per_unit = Counter(c["unit"] for c in report["contributions"])
    assert report["evaluations"] > 0 and len(per_unit) == 8 and max(per_unit.values()) <= 4
    assert all(c["stderr"] >= 0 for c in report["contributions"])


def test_resume_after_kill_repeats_no_evaluation_and_same_seed_same_policy(
        tmp_path: Path, half_bops_run) -> None:
    reference_out, reference = half_bops_run
    out = tmp_path / "resumed"
    command = [sys.executable, "-m", "smpq_onnx", "search", "--out", str(out), "--json",
               "--budget-bops-ratio", "0.5", *FAST]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / ".cache"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        files = list(cache.glob("*.jsonl")) if cache.exists() else []
        if files and len(files[0].read_text().splitlines()) >= 20:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (store,) = cache.glob("*.jsonl")
    done_before = len(store.read_text().splitlines())
    assert done_before >= 20 and not (out / "report.json").exists()

    report = json.loads(search(out, "--budget-bops-ratio", "0.5", *FAST).stdout)
    keys = [json.loads(line)["policy"] for line in store.read_text().splitlines()]
    assert len(keys) == len(set(keys)), "an evaluation was repeated"
    assert report["resumed_evaluations"] == done_before
    assert report["evaluations"] + report["resumed_evaluations"] == reference["evaluations"]
    assert json.loads((out / "policy.json").read_text()) == \
        json.loads((reference_out / "policy.json").read_text())


def test_infeasible_budget_exits_3_with_the_cheapest_costs(tmp_path: Path) -> None:
    result = search(tmp_path, "--budget-bops", "1000", *FAST, check=False)
    assert result.returncode == 3
    assert "no policy meets the budget" in result.stderr and "cheapest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "model.qdq.onnx").exists()


def test_unreachable_accuracy_target_exits_4_and_still_writes(tmp_path: Path) -> None:
    result = search(tmp_path, "--budget-bops-ratio", "0.07", "--max-drop", "0", *FAST,
                    check=False)
    assert result.returncode == 4, result.stderr
    assert "the best found" in result.stderr
    assert (tmp_path / "model.qdq.onnx").exists() and (tmp_path / "policy.json").exists()


def test_paper_mode_mix_semantics_with_a_reference_precision(tmp_path: Path) -> None:
    """The paper's configuration: permutations with truncation, mix semantics, momentum
    rounds, argmax-alpha selection; absent layers at W8A8 instead of FP32."""
    report = json.loads(search(tmp_path, "--game", "global", "--estimator", "permutation",
                               "--semantics", "mix",
                               "--reference", "w8a8", "--selection", "paper", "--samples", "2",
                               "--rounds", "2", "--truncation", "0.5").stdout)
    settings = report["settings"]
    assert (settings["semantics"], settings["reference"], settings["rounds"]) == (
        "mix", "W8A8", 2)
    store = next((tmp_path / ".cache").glob("*.jsonl")).read_text().splitlines()
    assert any(json.loads(line)["policy"].startswith("mix:") for line in store)
    # Alpha moved between the two rounds, and the argmax-alpha policy is a plain policy.
    assert any(c["alpha"] != 0 for c in report["contributions"])
    assert all(set(v) == {"w_bits", "a_bits"} for v in report["policy"].values())
    assert report["evaluations"] > 0 and 0 <= report["final"] <= 1


def test_one_sample_reports_unknown_standard_errors_as_strict_json_null(
        tmp_path: Path) -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    stdout = search(tmp_path, "--samples", "1", "--rounds", "1").stdout
    report = json.loads(stdout, parse_constant=refuse)
    assert all(c["stderr"] is None for c in report["contributions"])
    json.loads((tmp_path / "report.json").read_text(), parse_constant=refuse)


def test_illegal_reference_is_a_one_line_error(tmp_path: Path) -> None:
    result = search(tmp_path, "--game", "global", "--hw", "mcu", "--reference", "W2A2", *FAST,
                    check=False)
    assert result.returncode == 2
    assert "reference precision W2A2 is not legal" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_control_variate_estimator_runs_and_refuses_mix_semantics(tmp_path: Path) -> None:
    report = json.loads(search(tmp_path / "cv", "--estimator", "owen-cv", *FAST).stdout)
    assert report["settings"]["estimator"] == "owen-cv"
    # One table evaluation per player on top of the sampled ones.
    assert report["evaluations"] > len(report["contributions"])
    assert all(c["stderr"] >= 0 for c in report["contributions"])
    refused = search(tmp_path / "mix", "--game", "global", "--estimator", "owen-cv",
                     "--semantics", "mix", *FAST, check=False)
    assert refused.returncode == 2 and "owen-cv needs --semantics hard" in refused.stderr
