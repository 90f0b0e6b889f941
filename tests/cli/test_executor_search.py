"""A search's policy does not depend on where its evaluations run, and a killed search resumes
without repeating one."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from smpq_onnx.cli.main import cli

SMALL = ["--samples", "1", "--rounds", "1"]
"""One Owen sample on the bundled example: a few hundred evaluations."""


def search(out: Path, *extra: str) -> dict:
    result = CliRunner().invoke(cli, ["search", *SMALL, "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_same_policy_in_process_on_local_workers_and_on_ray(tmp_path: Path) -> None:
    reports = {name: search(tmp_path / name, *extra) for name, extra in [
        ("threads", ["--workers", "1"]),
        ("local", ["--workers", "2"]),
        ("ray", ["--executor", "ray", "--workers", "2"]),
    ]}
    policies = {name: (tmp_path / name / "policy.json").read_bytes() for name in reports}
    assert policies["local"] == policies["threads"] and policies["ray"] == policies["threads"]
    local, ray = reports["local"]["executor"], reports["ray"]["executor"]
    assert reports["threads"]["executor"]["in_process"] is True
    assert (local["name"], local["workers"], ray["name"], ray["workers"]) == \
        ("local", 2, "ray", 2)
    for spread, report in ((local, reports["local"]), (ray, reports["ray"])):
        workers = [n for name, n in spread["per_worker"].items() if name != "search process"]
        assert len(workers) == 2 and min(workers) > 0
        assert sum(spread["per_worker"].values()) == report["evaluations"]
    assert reports["local"]["evaluations"] == reports["threads"]["evaluations"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_search_joins_a_ray_cluster_by_address(tmp_path: Path) -> None:
    """The README's cluster steps: ``ray start --head``, then ``--ray-address``."""
    ray_cli = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    port = _free_port()
    subprocess.run([ray_cli, "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True, timeout=180)
    try:
        joined = search(tmp_path / "cluster", "--executor", "ray", "--workers", "2",
                        "--ray-address", f"127.0.0.1:{port}")
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)
    search(tmp_path / "threads")
    assert (tmp_path / "cluster" / "policy.json").read_bytes() == \
        (tmp_path / "threads" / "policy.json").read_bytes()
    spread = joined["executor"]
    assert (spread["name"], spread["address"]) == ("ray", f"127.0.0.1:{port}")
    assert min(n for name, n in spread["per_worker"].items() if name != "search process") > 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--ray-address", "10.0.0.1:6379"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:9"],
     "cannot reach a Ray cluster at '127.0.0.1:9'"),
])
def test_bad_executor_settings_are_one_line_and_exit_2(tmp_path: Path, extra: list[str],
                                                       message: str) -> None:
    result = CliRunner().invoke(cli, ["search", *extra, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"smpq-onnx: error: {message}"), lines
    assert not (tmp_path / "o" / "policy.json").exists()


def _store_lines(out: Path) -> list[str]:
    stores = list((out / ".cache").glob("evaluations-*.jsonl")) if out.is_dir() else []
    return stores[0].read_text().splitlines() if stores else []


def test_a_killed_search_on_workers_resumes_without_repeating_an_evaluation(
        tmp_path: Path) -> None:
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "smpq_onnx", "search", *SMALL, "--workers", "2",
               "--out", str(out), "--json"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_store_lines(out)) < 40:
        assert driver.poll() is None, "the search ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = len(_store_lines(out))
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    report = json.loads(finished.stdout)
    lines = _store_lines(out)
    keys = [json.loads(line)["policy"] for line in lines if line.strip()]
    assert len(keys) == len(set(keys)), "an evaluation was repeated after the resume"
    fast = [k for k in keys if not k.startswith("deployed")]
    assert report["resumed_evaluations"] >= before - 1  # the last line may be cut short
    assert report["resumed_evaluations"] + report["evaluations"] == len(fast)
    reference = search(tmp_path / "uninterrupted", "--workers", "1")
    assert (out / "policy.json").read_bytes() == \
        (tmp_path / "uninterrupted" / "policy.json").read_bytes()
    assert report["evaluations"] + report["resumed_evaluations"] == reference["evaluations"]


def test_workers_of_a_killed_search_exit(tmp_path: Path) -> None:
    out = tmp_path / "orphans"
    driver = subprocess.Popen([sys.executable, "-m", "smpq_onnx", "search", *SMALL,
                               "--workers", "2", "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_store_lines(out)) < 5:
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    children = _children(driver.pid)
    assert children, "no worker processes"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("method", ["amp", "evolution", "random", "context"])
def test_every_batching_method_finds_the_same_policy_on_workers(tmp_path: Path,
                                                                 method: str) -> None:
    from conftest import conv_chain_files

    model, data = conv_chain_files(tmp_path, samples=96, seed=5)
    common = [str(model), "--data", str(data), "--method", method, "--max-evals", "40"]
    found = {}
    for workers in ("1", "2"):
        out = tmp_path / f"{method}-{workers}"
        result = CliRunner().invoke(cli, ["search", *common, "--workers", workers,
                                          "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
        found[workers] = ((out / "policy.json").read_bytes(),
                          json.loads(result.stdout)["evaluations"])
    assert found["1"] == found["2"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_baselines_progress_counts_the_evaluations_of_every_worker(tmp_path: Path,
                                                                     workers: int) -> None:
    from conftest import conv_chain_files

    from smpq_onnx import search as api_search

    model, data = conv_chain_files(tmp_path, samples=96, seed=5)
    seen: list[tuple[str, int, int]] = []
    outcome = api_search(str(model), data=str(data), method="random", max_evals=30,
                         workers=workers, out=str(tmp_path / "out"),
                         progress=lambda phase, done, total: seen.append((phase, done, total)))
    counted = [done for phase, done, total in seen if phase == "random"]
    assert counted == list(range(1, len(counted) + 1))
    assert {total for phase, _, total in seen if phase == "random"} == {30}
    assert counted[-1] == min(outcome.report["evaluations"], 30)
