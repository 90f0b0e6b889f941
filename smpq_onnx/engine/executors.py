"""Executors: where the fast engine's evaluations run when a search hands over a batch.

A search gives :meth:`Evaluator.evaluate_many` a batch of independent policies (an Owen round,
AMP's sensitivities, a brood of children). With no executor the evaluator runs them itself,
one after another, each batch of samples side by side in threads. An executor runs them in
workers instead: each worker builds its own :class:`Evaluator` from a :class:`WorkerSpec`
(the imported model, calibration with its rounded weights, data, metric and FP32 outputs,
sent once per worker) with its own ONNX Runtime sessions on one intra-op thread.

Results come back in any order; the driver records each as it arrives (memo and the JSONL
store, the single source of truth) and the search reads them in its own order, so a policy's
score, and so the search's result, does not depend on the executor or the worker count: a
worker runs the same single-threaded kernels on the same batches as the driver would.

- :class:`LocalExecutor`: worker processes on this machine (``concurrent.futures`` with
  spawned processes; a worker that dies is replaced and its evaluations retried). The spec's
  arrays sit once in shared memory for all workers (:mod:`smpq_onnx.engine.shared_pickle`);
  Ray's object store does the same for actors. A batch goes
  out in contiguous chunks, so that neighbouring policies (which share a prefix of the
  network) meet the same worker's boundary cache; results stream back one by one.
- :class:`smpq_onnx.engine.ray_executor.RayExecutor`: the same workers as Ray actors.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.engine.metrics import Metric
from smpq_onnx.engine.shared_pickle import SharedPickle
from smpq_onnx.errors import SmpqError
from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.calibration import Calibration
from smpq_onnx.quant.policy import Policy

if TYPE_CHECKING:
    from smpq_onnx.engine.evaluator import Evaluator

MAX_ATTEMPTS = 3
"""Times one policy may take a worker down before the search gives up on it."""
MIN_WORKER_CACHE_BYTES = 128 << 20
"""Each worker's share of the boundary cache is at least this."""
CHUNKS_PER_WORKER = 16
MAX_CHUNK = 8
PARENT_POLL_S = 0.5


class WorkerDiedError(SmpqError):
    """A policy's evaluation killed its worker process again and again."""


@dataclass(frozen=True)
class Scored:
    """One finished evaluation: the batch position, its score, its seconds and its worker."""

    index: int
    score: float
    seconds: float
    worker: str


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build an evaluator equal to the driver's."""

    model: ImportedModel
    calibration: Calibration
    data: Dataset
    metric: Metric
    runtime: RuntimeConfig
    batch_size: int
    profile_name: str
    reference: np.ndarray
    prefix_cache_bytes: int

    def for_workers(self, workers: int) -> WorkerSpec:
        """The spec with one intra-op thread per worker and the cache split between them."""
        share = max(self.prefix_cache_bytes // max(workers, 1), MIN_WORKER_CACHE_BYTES)
        return replace(self, runtime=replace(self.runtime, threads=1),
                       prefix_cache_bytes=share)

    def build(self) -> Evaluator:
        from smpq_onnx.engine.evaluator import Evaluator

        return Evaluator(self.model, self.calibration, self.data, self.metric,
                         runtime=self.runtime, batch_size=self.batch_size,
                         prefix_cache_bytes=self.prefix_cache_bytes,
                         profile_name=self.profile_name, reference=self.reference)


class Executor(Protocol):
    name: str
    workers: int
    counts: Counter[str]
    """Evaluations finished per worker."""
    restarts: int
    """Workers replaced after dying."""

    def run(self, policies: Sequence[Policy]) -> Iterator[Scored]:
        """Every policy's score, as each finishes (any order)."""
        ...

    def close(self) -> None: ...


# --- worker process side -------------------------------------------------------------------

_worker_evaluator: Evaluator | None = None
_worker_results: Any = None


def _start_worker(spec: SharedPickle, results: Any) -> None:
    global _worker_evaluator, _worker_results
    _exit_with_parent(os.getppid())
    _worker_evaluator = spec.load().build()
    _worker_results = results


def _exit_with_parent(parent: int) -> None:
    """End this worker once the search that spawned it is gone (killed with -9, its pool
    cannot tell the workers), instead of idling as an orphan."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _score_chunk(run: int, indices: list[int], policies: list[Policy]) -> int:
    """Evaluate a contiguous piece of a batch in order (neighbouring policies share prefixes,
    which this worker's boundary cache then reuses), each result sent as it is known."""
    assert _worker_evaluator is not None, "worker not initialized"
    worker = str(os.getpid())
    for index, policy in zip(indices, policies, strict=True):
        result = _worker_evaluator.evaluate(policy)
        _worker_results.put((run, index, result.score, result.seconds, worker))
    _worker_evaluator.forget()  # the driver keeps the results; the worker keeps its caches
    return len(indices)


def chunks(count: int, workers: int) -> list[range]:
    """``count`` positions in contiguous pieces of ``count / (CHUNKS_PER_WORKER x workers)``,
    between 1 and ``MAX_CHUNK``; the pool hands them out in order, so each worker's next piece
    lies just past its last one in the batch.

    Measured (README "Executors"): policies along a batch differ in cost (AMP lowers the first
    layers first: a full run each, then ever shorter tails), so pieces that shrink along the
    batch left one worker with the 40 costly policies and the other with the 120 cheap ones;
    small even pieces balance, and a worker still finds the shared prefixes in its cache.
    """
    size = max(1, min(MAX_CHUNK, -(-count // (CHUNKS_PER_WORKER * workers))))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


# --- driver side ---------------------------------------------------------------------------


class LocalExecutor:
    """``workers`` spawned processes, each with one evaluator (built once, from ``spec``)."""

    name = "local"

    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        if workers < 1:
            raise ValueError("an executor needs at least one worker")
        self.workers = workers
        self.spec = SharedPickle(spec.for_workers(workers))
        """One copy of the data, weights and FP32 outputs for every worker."""
        self.counts: Counter[str] = Counter()
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        # spawn, not fork: the driver holds ONNX Runtime thread pools that a fork would copy.
        self._pool: ProcessPoolExecutor | None = None
        self._results: Any = None
        self._runs = 0

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._results = self._context.Queue()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._context,
                                             initializer=_start_worker,
                                             initargs=(self.spec, self._results))
        return self._pool

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (for tests that kill one)."""
        pool = self._pool
        return [] if pool is None else [p.pid for p in getattr(pool, "_processes", {}).values()
                                        if p.pid is not None]

    def run(self, policies: Sequence[Policy]) -> Iterator[Scored]:
        pending = set(range(len(policies)))
        attempts: Counter[int] = Counter()
        while pending:
            self._runs += 1
            run, pool = self._runs, self._started()
            order = sorted(pending)
            futures = [pool.submit(_score_chunk, run, [order[i] for i in piece],
                                   [policies[order[i]] for i in piece])
                       for piece in chunks(len(order), self.workers)]
            broken, idle_after_done = False, 0
            try:
                while pending and not broken:
                    try:
                        got, index, score, seconds, worker = self._results.get(timeout=0.2)
                    except queue.Empty:
                        broken = any(f.done() and f.exception() is not None for f in futures)
                        # Every chunk returned, yet results are missing for a second: lost.
                        idle_after_done += all(f.done() for f in futures)
                        broken = broken or idle_after_done >= 5
                        continue
                    if got != run or index not in pending:
                        continue
                    pending.discard(index)
                    self.counts[worker] += 1
                    yield Scored(index, score, seconds, worker)
            finally:
                if pending:
                    self._discard_pool()
            if broken:
                for index in pending:
                    attempts[index] += 1
                self._replace_workers(pending, attempts, futures)

    def _replace_workers(self, pending: set[int], attempts: Counter[int],
                         futures: list[Future[int]]) -> None:
        for future in futures:
            error = future.exception() if future.done() else None
            if error is not None and not isinstance(error, BrokenProcessPool):
                raise error  # an evaluation's own error, not a worker's death
        worst = max((attempts[i] for i in pending), default=0)
        if worst >= MAX_ATTEMPTS:
            raise WorkerDiedError(
                f"a worker process died {worst} times evaluating one policy: out of memory? "
                "rerun with fewer --workers (a script calling smpq_onnx.search needs "
                "`if __name__ == '__main__':` around it, or workers=1)")
        self.restarts += 1

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                if process.is_alive():
                    process.kill()
        if self._results is not None:
            self._results.close()
            self._results = None

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if self._results is not None:
            self._results.close()
            self._results = None
        self.spec.close()
