"""Executors: worker processes and Ray actors give the in-process scores, survive a worker's
death, and refuse bad settings in one line."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import conv_chain

from smpq_onnx.api.context import QuantizationContext, build_context
from smpq_onnx.api.executing import ExecutorChoice
from smpq_onnx.engine.executors import LocalExecutor, chunks
from smpq_onnx.errors import InvalidArgumentError, MissingDependencyError
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.smpq import policy_of


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> QuantizationContext:
    folder = tmp_path_factory.mktemp("executors")
    model = folder / "chain.onnx"
    onnx.save(conv_chain(), str(model))
    data = folder / "data.npz"
    # Enough samples that one evaluation takes a while: a kill lands mid-batch.
    np.savez(data, x=np.random.default_rng(0).normal(size=(4000, 3, 8, 8)).astype(np.float32))
    return build_context(model, hw="flexible", data=data, runtime=RuntimeConfig(provider="cpu"))


def random_policies(context: QuantizationContext, count: int, seed: int = 0) -> list[Policy]:
    game = QuantizationGame(context.space, reference=Option.parse("FP32"), semantics="hard")
    rng = np.random.default_rng(seed)
    policies = [policy_of(game, [int(rng.integers(len(u.options))) for u in game.units])
                for _ in range(count)]
    return list(dict.fromkeys(policies))


def in_process_scores(context: QuantizationContext, policies: list[Policy]) -> list[float]:
    return context.evaluator.worker_spec().build().scores(policies)


def kill_one_worker_mid_batch(executor: Any, policies: list[Policy],
                              expected: list[float]) -> None:
    """Kill a worker after the first result: every policy still comes back once, right."""
    try:
        stream = executor.run(policies)
        first = next(stream)
        os.kill(executor.worker_pids()[0], signal.SIGKILL)
        results = [first, *stream]
    finally:
        executor.close()
    assert sorted(s.index for s in results) == list(range(len(policies)))  # each exactly once
    assert [s.score for s in sorted(results, key=lambda s: s.index)] == expected
    assert executor.restarts >= 1


def test_chunks_cover_a_batch_in_order_without_empty_pieces() -> None:
    for count in (0, 1, 5, 8, 100, 1001):
        for workers in (1, 2, 3, 8):
            pieces = chunks(count, workers)
            assert [i for piece in pieces for i in piece] == list(range(count))
            assert all(len(piece) > 0 for piece in pieces)
            sizes = [len(piece) for piece in pieces]
            assert max(sizes, default=1) <= 8  # small: the pool's order balances the load
            assert len(set(sizes[:-1])) <= 1  # even, but for the last
            if count:  # about 16 pieces per worker, never more than 8 policies each
                assert sizes[0] == max(1, min(8, -(-count // (16 * workers))))


def test_local_workers_give_the_in_process_scores(context: QuantizationContext) -> None:
    policies = random_policies(context, 40)
    expected = in_process_scores(context, policies)
    executor = LocalExecutor(context.evaluator.worker_spec(), 2)
    try:
        got = {s.index: s.score for s in executor.run(policies)}
    finally:
        executor.close()
    assert [got[i] for i in range(len(policies))] == expected
    assert len(executor.counts) == 2 and sum(executor.counts.values()) == len(policies)


def test_a_killed_local_worker_is_replaced_and_its_evaluations_retried(
        context: QuantizationContext) -> None:
    policies = random_policies(context, 60, seed=1)
    expected = in_process_scores(context, policies)
    kill_one_worker_mid_batch(LocalExecutor(context.evaluator.worker_spec(), 2), policies,
                              expected)


def test_evaluate_many_records_executor_results_in_the_batch_order(
        context: QuantizationContext) -> None:
    policies = random_policies(context, 12, seed=2)
    expected = in_process_scores(context, policies)
    evaluator = context.evaluator.worker_spec().build()
    evaluator.executor = LocalExecutor(evaluator.worker_spec(), 2)
    batch = [policies[3], *policies, policies[0]]  # repeats are evaluated once
    try:
        results = evaluator.evaluate_many(batch)
    finally:
        evaluator.executor.close()
    assert [r.score for r in results] == [expected[3], *expected, expected[0]]
    assert evaluator.n_evaluations == len(policies)


@pytest.fixture(scope="module")
def local_ray() -> object:
    import ray  # installed with the dev extra: these tests run in CI

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_actors_give_the_in_process_scores_and_survive_a_killed_actor(
        context: QuantizationContext, local_ray: object) -> None:
    from smpq_onnx.engine.ray_executor import RayExecutor

    policies = random_policies(context, 60, seed=3)
    expected = in_process_scores(context, policies)
    kill_one_worker_mid_batch(RayExecutor(context.evaluator.worker_spec(), 2), policies,
                              expected)


def test_ray_refuses_more_workers_than_free_cpus(context: QuantizationContext,
                                                 local_ray: object) -> None:
    from smpq_onnx.engine.ray_executor import RayExecutor

    with pytest.raises(InvalidArgumentError, match=r"--workers 5 needs 5 CPUs .* has 2 free"):
        RayExecutor(context.evaluator.worker_spec(), 5)


def test_ray_without_ray_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                                       context: QuantizationContext) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'smpq-onnx\[ray\]'"):
        ExecutorChoice("ray").check().attach(context.evaluator)


def test_an_unreachable_ray_address_fails_fast(context: QuantizationContext) -> None:
    import time

    start = time.perf_counter()
    with pytest.raises(InvalidArgumentError, match=r"cannot reach a Ray cluster at '127.0.0.1:9'"):
        ExecutorChoice("ray", address="127.0.0.1:9").check().attach(context.evaluator)
    assert time.perf_counter() - start < 30  # ray.init alone waits for minutes


def test_executor_choices_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="--ray-address needs --executor ray"):
        ExecutorChoice("local", address="10.0.0.1:6379").check()
    with pytest.raises(InvalidArgumentError, match="--workers must be >= 1"):
        ExecutorChoice("local", workers=0).check()
    with pytest.raises(InvalidArgumentError, match="not one of local, ray"):
        ExecutorChoice("dask").check()


def test_a_ray_cluster_with_no_free_cpu_is_refused(tmp_path: Path) -> None:
    """A separate process: this one may already hold a Ray instance."""
    import subprocess

    script = (
        "import ray, numpy as np\n"
        "ray.init(num_cpus=0, include_dashboard=False, log_to_driver=False)\n"
        "from smpq_onnx.engine.ray_executor import RayExecutor\n"
        "from smpq_onnx.errors import InvalidArgumentError\n"
        "try:\n"
        "    RayExecutor(None, 2)\n"
        "except InvalidArgumentError as e:\n"
        "    print('REFUSED', e)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)
    assert "REFUSED the local Ray instance has no CPU free" in result.stdout, result.stderr[-800:]
