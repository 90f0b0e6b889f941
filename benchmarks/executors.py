"""Evaluation executors: throughput with 1 and 2 workers, a MobileNetV2 search, Ray, memory.

1. Throughput (policies per second) on one fixed batch: the first policies of an Owen round
   (what a default search hands over), on the bundled example and on MobileNetV2 (ImageNet
   weights, natural crops). Modes: in the driver's process (batches side by side in threads,
   no executor), 1 and 2 local worker processes, 2 Ray actors on a local instance. Worker
   start-up is timed apart; every mode must give the same scores.
2. A MobileNetV2 search (``--method amp``, fixed evaluation count) run as ``smpq-onnx search``
   with ``--workers 1``, ``--workers 2`` and ``--executor ray --workers 2``: wall time, the
   policy (must be identical) and peak memory: the process tree's summed PSS (shared pages
   counted once) and the machine's used memory over its level before the run (which also
   sees Ray's processes and object store).
3. A simulation of the default MobileNetV2 search at 8, 32 and 128 workers from the measured
   per-evaluation times, worker start-up and Ray's per-task overhead (see ``simulate``).

    python benchmarks/executors.py [--eval 128] [--calib 64] [--skip-ray] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from harness import assets
from harness.mobilenet_v2 import export_mobilenet_v2

from smpq_onnx.api.context import QuantizationContext, build_context
from smpq_onnx.engine.executors import LocalExecutor, chunks
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.shapley import owen_coalitions
from smpq_onnx.strategy.smpq import DEFAULT_MAX_EVALS, SearchSettings, sized_settings


class MemorySampler:
    """Peak summed PSS of a process tree, and peak machine-wide used memory over a baseline,
    polled every 0.2 s from /proc."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.baseline = _used_bytes()
        self.peak_tree = 0
        self.peak_machine = 0
        self.peak_per_process: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            sizes = {pid: _pss(pid) for pid in _tree(self.root)}
            self.peak_tree = max(self.peak_tree, sum(sizes.values()))
            for pid, size in sizes.items():
                self.peak_per_process[pid] = max(self.peak_per_process.get(pid, 0), size)
            self.peak_machine = max(self.peak_machine, _used_bytes() - self.baseline)
            self._stop.wait(0.2)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        others = sorted((size for pid, size in self.peak_per_process.items()
                         if pid != self.root), reverse=True)
        return {"peak_tree_pss_gb": self.peak_tree / 1e9,
                "peak_machine_used_over_baseline_gb": self.peak_machine / 1e9,
                "peak_pss_search_process_gb": self.peak_per_process.get(self.root, 0) / 1e9,
                "peak_pss_other_processes_gb": [size / 1e9 for size in others if size > 50e6]}


def _used_bytes() -> int:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def owen_batch(context: QuantizationContext, share: float) -> list[Policy]:
    """The distinct policies of the first ``share`` of the first round of a default search
    (Owen, sized to the default --max-evals), in the order the search hands them over."""
    game = QuantizationGame(context.space, reference=Option.parse("FP32"), semantics="hard")
    settings = sized_settings(game, SearchSettings(), max_evals=DEFAULT_MAX_EVALS)
    levels = owen_coalitions(len(game.players), settings.samples,
                             np.random.default_rng(settings.seed))
    policies = [game.realize(c) for level in levels[:max(1, round(share * len(levels)))]
                for c in level]
    return list(dict.fromkeys(policies))


def throughput(context: QuantizationContext, policies: list[Policy], *,
               ray: bool) -> dict[str, Any]:
    evaluator = context.evaluator
    game = QuantizationGame(context.space, reference=Option.parse("FP32"), semantics="hard")
    warm = game.realize([])  # every layer at the reference: starts workers, fills no batch
    rows: dict[str, Any] = {}
    reference: list[float] | None = None
    modes = ["in_process_threads", "local_1", "local_2"] + (["ray_2"] if ray else [])
    for mode in modes:
        evaluator.forget()
        fresh = evaluator.worker_spec().build() if mode == "in_process_threads" else evaluator
        start = time.perf_counter()
        executor: Any = None
        if mode.startswith("local"):
            executor = LocalExecutor(evaluator.worker_spec(), int(mode[-1]))
        elif mode.startswith("ray"):
            from smpq_onnx.engine.ray_executor import RayExecutor

            executor = RayExecutor(evaluator.worker_spec(), int(mode[-1]))
        if executor is not None:
            list(executor.run([warm] * executor.workers))  # start every worker
        else:
            fresh.evaluate(warm)
        startup = time.perf_counter() - start
        fresh.executor = executor
        start = time.perf_counter()
        results = fresh.evaluate_many(policies)
        seconds = time.perf_counter() - start
        scores = [r.score for r in results]
        reference = reference or scores
        rows[mode] = {"startup_s": startup, "run_s": seconds,
                      "policies_per_s": len(policies) / seconds,
                      "same_scores_as_first_mode": scores == reference,
                      "per_worker": dict(executor.counts) if executor else None,
                      "eval_seconds": [r.seconds for r in results]}
        print(mode, {k: v for k, v in rows[mode].items() if k != "eval_seconds"}, flush=True)
        if executor is not None:
            executor.close()
        fresh.executor = None
    rows["speedup_local_2_vs_1"] = (rows["local_2"]["policies_per_s"]
                                    / rows["local_1"]["policies_per_s"])
    rows["speedup_local_2_vs_threads"] = (rows["local_2"]["policies_per_s"]
                                          / rows["in_process_threads"]["policies_per_s"])
    if ray:
        rows["ray_2_vs_local_2"] = (rows["ray_2"]["policies_per_s"]
                                    / rows["local_2"]["policies_per_s"])
    return rows


def run_search(args: list[str], out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "smpq_onnx", "search", *args, "--out", str(out), "--json"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    sampler = MemorySampler(process.pid)
    stdout, stderr = process.communicate()
    memory = sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(stderr[-2000:])
    report = json.loads(stdout)
    return {"wall_s": time.perf_counter() - start, **memory, "phases_s": report["phases_s"],
            "evaluations": report["evaluations"], "final": report["final"],
            "executor": report["executor"], "policy": report["policy"]}


def ray_task_overhead_s() -> float:
    """Median round trip of an empty actor call on a local Ray instance."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class Echo:
        def echo(self, x: int) -> int:
            return x

    actor = Echo.remote()
    ray.get(actor.echo.remote(0))
    times = []
    for i in range(200):
        start = time.perf_counter()
        ray.get(actor.echo.remote(i))
        times.append(time.perf_counter() - start)
    ray.shutdown()
    return statistics.median(times)


def simulate(eval_seconds: list[float], full_eval_s: float, batches: list[int],
             sequential_s: float, startup_s: float, task_overhead_s: float,
             workers: int) -> float:
    """Expected wall time of a search whose evaluations come in ``batches`` (sizes), each
    spread over ``workers`` in contiguous chunks (as :class:`LocalExecutor` does).

    Per evaluation: a draw from the measured times (with the prefix cache's reuse), plus
    ``task_overhead_s``; a chunk's first evaluation finds no cached prefix and costs
    ``full_eval_s``. A batch ends with its slowest worker (greedy list scheduling of the
    chunks); ``sequential_s`` (setup, selection, deployed checks) does not spread.
    """
    rng = np.random.default_rng(0)
    total = sequential_s + startup_s
    for size in batches:
        loads = np.zeros(workers)
        for piece in chunks(size, workers):
            cost = full_eval_s + task_overhead_s
            cost += float(np.sum(rng.choice(eval_seconds, len(piece) - 1))) + \
                task_overhead_s * (len(piece) - 1)
            loads[int(np.argmin(loads))] += cost
        total += float(loads.max())
    return total


def memory_run(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The 2-worker MobileNetV2 AMP search on ``--memory-eval`` crops whose peak is the target,
    with each process's own peak."""
    model = folder / "mobilenet_v2.onnx"
    if not model.exists():
        export_mobilenet_v2(model)
    np.savez(folder / "eval_large.npz", x=assets.natural_images(args.memory_eval, seed=1))
    np.savez(folder / "calib_large.npz",
             x=assets.natural_images(args.eval + args.calib, seed=0)[args.eval:])
    large = [str(model), "--data", str(folder / "eval_large.npz"), "--calib-data",
             str(folder / "calib_large.npz"), "--metric", "agreement", "--hw", "npu"]
    run = run_search([*large, "--method", "amp", "--workers", "2"], folder / "search-large")
    run.pop("policy")
    print("memory run", run, flush=True)
    return {f"mobilenet_amp_search_{args.memory_eval}_crops_2_workers": run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=int, default=128, help="MobileNetV2 evaluation crops")
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--round-share", type=float, default=1.0,
                        help="share of a default search's first round in the throughput batch")
    parser.add_argument("--memory-eval", type=int, default=396,
                        help="crops of the 2-worker search whose peak memory is the target")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the 2-worker memory run, merged into --out")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "executors.json")
    args = parser.parse_args()
    ray = not args.skip_ray
    assets.ensure_packages()
    if args.memory_only:
        record = json.loads(args.out.read_text()) if args.out.exists() else {}
        with tempfile.TemporaryDirectory() as tmp:
            record.update(memory_run(Path(tmp), args))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        return
    record: dict[str, Any] = {"machine_cores": os.cpu_count(), "eval_crops": args.eval}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        example = build_context(None, hw="flexible", data=None)
        example_batch = owen_batch(example, args.round_share)
        record["example_throughput_policies"] = len(example_batch)
        record["example_throughput"] = throughput(example, example_batch, ray=ray)
        model = export_mobilenet_v2(folder / "mobilenet_v2.onnx")
        images = assets.natural_images(args.eval + args.calib, seed=0)
        np.savez(folder / "eval.npz", x=images[:args.eval])
        np.savez(folder / "calib.npz", x=images[args.eval:])
        files = [str(model), "--data", str(folder / "eval.npz"), "--calib-data",
                 str(folder / "calib.npz"), "--metric", "agreement", "--hw", "npu"]
        mobile = build_context(model, hw="npu", data=folder / "eval.npz",
                               calib_data=folder / "calib.npz", metric="agreement")
        record["mobilenet_batch_size"] = mobile.evaluator.batch_size
        batch = owen_batch(mobile, args.round_share)
        record["mobilenet_throughput_policies"] = len(batch)
        record["mobilenet_throughput"] = throughput(mobile, batch, ray=ray)
        full_eval_s = record["mobilenet_throughput"]["local_1"]["eval_seconds"][0]
        game = QuantizationGame(mobile.space, reference=Option.parse("FP32"), semantics="hard")
        settings = sized_settings(game, SearchSettings(), max_evals=DEFAULT_MAX_EVALS)
        del mobile
        if not args.skip_search:
            searches = {}
            for name, extra in [("in_process", ["--workers", "1"]),
                                ("local_2", ["--workers", "2"]),
                                *([("ray_2", ["--executor", "ray", "--workers", "2"])]
                                  if ray else [])]:
                searches[name] = run_search([*files, "--method", "amp", *extra],
                                            folder / f"search-{name}")
                print(name, {k: v for k, v in searches[name].items() if k != "policy"},
                      flush=True)
            record.update(memory_run(folder, args))
            policies = [row.pop("policy") for row in searches.values()]
            searches["same_policy"] = all(p == policies[0] for p in policies)
            searches["speedup_local_2_vs_in_process"] = (searches["in_process"]["wall_s"]
                                                         / searches["local_2"]["wall_s"])
            record["mobilenet_amp_search"] = searches
    # Simulation of the default search (Owen, sized to --max-evals) at scale.
    players = len(game.players)
    per_round = settings.samples * 2 * (players + 1)
    measured = record["mobilenet_throughput"]["local_1"]["eval_seconds"][1:]
    startup = record["mobilenet_throughput"]["local_2"]["startup_s"]
    overhead = ray_task_overhead_s() if ray else 0.0
    sequential = 4 * full_eval_s + 10.0  # deployed checks of the candidates, selection
    one = simulate(measured, full_eval_s, [per_round] * settings.rounds, sequential, startup,
                   overhead, 1)
    record["simulation"] = {
        "assumptions": {"players": players, "owen_samples": settings.samples,
                        "rounds": settings.rounds, "policies_per_round_batch": per_round,
                        "mean_eval_s": statistics.mean(measured), "full_eval_s": full_eval_s,
                        "worker_startup_s": startup, "ray_task_overhead_s": overhead,
                        "sequential_s": sequential,
                        "note": "distinct policies per round are fewer than the batch (toggles "
                                "that realize the same policy); the simulation counts every "
                                "coalition, an upper bound on the work"},
        "expected_speedup": {str(w): one / simulate(measured, full_eval_s,
                                                    [per_round] * settings.rounds, sequential,
                                                    startup, overhead, w)
                             for w in (1, 2, 8, 32, 128)},
        "amdahl_limit": one / (sequential + startup + settings.rounds * full_eval_s),
    }
    print("simulation", record["simulation"], flush=True)
    for rows in (record["example_throughput"], record["mobilenet_throughput"]):
        for mode in rows.values():
            if isinstance(mode, dict):
                times = mode.pop("eval_seconds")
                mode["mean_eval_s"] = statistics.mean(times) if times else math.nan
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
