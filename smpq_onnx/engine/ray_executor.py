"""Evaluations on Ray actors: a local Ray instance, or a cluster reached by address.

Each actor is one worker of :mod:`smpq_onnx.engine.executors` (its own evaluator and ONNX
Runtime sessions, one intra-op thread: Ray does not stop a task from using more cores than it
asked for). The worker spec goes into Ray's object store once and every actor reads it from
there, so the calibration and rounded weights travel once per worker, not per evaluation. With
CUDA each actor asks for its share of the cluster's GPUs. An actor that dies is replaced by a
new one and its evaluations retried (at most ``MAX_ATTEMPTS`` times per policy).

Ray is an optional extra (``pip install 'smpq-onnx[ray]'``) imported only here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from smpq_onnx.engine.executors import MAX_ATTEMPTS, Scored, WorkerDiedError, WorkerSpec
from smpq_onnx.errors import InvalidArgumentError, MissingDependencyError
from smpq_onnx.quant.policy import Policy

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
RELEASE_WAIT_S = 10.0
IN_FLIGHT_PER_ACTOR = 2
"""Evaluations queued on each actor: one running, one ready (hides the round trip)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise MissingDependencyError(
            "--executor ray needs Ray, which is not installed; "
            "run: pip install 'smpq-onnx[ray]'") from error
    return ray


class _EvaluatorActor:
    """Body of the Ray actor (wrapped with ``ray.remote`` at start-up)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.evaluator = spec.build()

    def score(self, policy: Policy) -> tuple[float, float, str]:
        result = self.evaluator.evaluate(policy)
        self.evaluator.forget()
        return result.score, result.seconds, str(os.getpid())

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
    name = "ray"

    def __init__(self, spec: WorkerSpec, workers: int | None, *, address: str | None = None,
                 cuda: bool = False) -> None:
        ray = self._ray = _ray()
        self.address = address
        if address is not None:
            check_reachable(address)
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            connect(ray, address)
        free = ray.available_resources()
        cpus = int(free.get("CPU", 0))
        self._cpus_before = cpus
        where = f"the Ray cluster at {address}" if address else "the local Ray instance"
        if cpus < 1:
            self.close()
            raise InvalidArgumentError(
                f"{where} has no CPU free; free some (ray status shows them) or add nodes")
        self.workers = workers or cpus
        if self.workers > cpus:
            self.close()
            raise InvalidArgumentError(
                f"--workers {self.workers} needs {self.workers} CPUs but {where} has {cpus} "
                f"free; use --workers {cpus} or fewer")
        gpus = float(free.get("GPU", 0)) if cuda else 0.0
        options: dict[str, Any] = {"num_cpus": 1}
        if gpus > 0:
            options["num_gpus"] = gpus / self.workers
        self._actor_class = ray.remote(**options)(_EvaluatorActor)
        self._spec = ray.put(spec.for_workers(self.workers))
        self.actors = [self._new_actor() for _ in range(self.workers)]
        self.counts: Counter[str] = Counter()
        self.restarts = 0
        logger.info("ray: %d workers on %s", self.workers, where)

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self._spec)

    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in self._ray.get([a.pid.remote() for a in self.actors])]

    def run(self, policies: Sequence[Policy]) -> Iterator[Scored]:
        ray = self._ray
        queue = list(range(len(policies)))[::-1]
        in_flight: dict[Any, tuple[int, int, Any]] = {}
        attempts: Counter[int] = Counter()

        def submit(slot: int) -> None:
            index = queue.pop()
            actor = self.actors[slot]
            in_flight[actor.score.remote(policies[index])] = (index, slot, actor)

        for _ in range(IN_FLIGHT_PER_ACTOR):
            for slot in range(len(self.actors)):
                if queue:
                    submit(slot)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            index, slot, actor = in_flight.pop(ready[0])
            try:
                score, seconds, worker = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                attempts[index] += 1
                if attempts[index] >= MAX_ATTEMPTS:
                    raise WorkerDiedError(
                        f"a Ray worker died {attempts[index]} times evaluating one policy "
                        "(out of memory?); rerun with fewer --workers") from None
                queue.append(index)
                if self.actors[slot] is actor:  # the first of its lost evaluations to return
                    self.actors[slot] = self._new_actor()
                    self.restarts += 1
                submit(slot)
                continue
            if queue:
                submit(slot)
            self.counts[worker] += 1
            yield Scored(index, score, seconds, worker)

    def close(self) -> None:
        ray = self._ray
        actors, self.actors = getattr(self, "actors", []), []
        for actor in actors:
            ray.kill(actor)
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        elif actors:  # a Ray instance that stays: wait (briefly) until it has their CPUs back
            deadline = time.monotonic() + RELEASE_WAIT_S
            while (ray.available_resources().get("CPU", 0) < self._cpus_before
                   and time.monotonic() < deadline):
                time.sleep(0.1)


def reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why ``host:port`` (``ray://`` allowed) takes no TCP connection, or None when it does
    (``auto`` and other forms without a port are left to Ray). ``ray.init`` itself waits for
    minutes on an address where nothing listens."""
    tail = address.split("://", 1)[-1]
    host, _, port = tail.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def check_reachable(address: str) -> None:
    problem = reachable(address)
    if problem is not None:
        raise InvalidArgumentError(
            f"cannot reach a Ray cluster at {address!r} ({problem}); start one there with "
            "`ray start --head`, or check --ray-address")


def connect(ray: Any, address: str | None) -> None:
    """``ray.init`` on ``address`` (else a new local instance), with one-line errors."""
    try:
        if address is None:
            ray.init(num_cpus=None, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        raise InvalidArgumentError(
            f"cannot reach a Ray cluster at {address!r} ({str(error).splitlines()[0]}); "
            "start one with `ray start --head` there, or check --ray-address") from error
