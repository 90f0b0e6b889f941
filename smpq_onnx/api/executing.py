"""Which executor runs a search's evaluations (``--executor``, ``--workers``, ``--ray-address``).

``local`` (default): ``--workers 1`` (default) evaluates in the search's own process, each
evaluation's batches side by side in threads; ``--workers N`` uses N worker processes, one
intra-op thread each (measured on 2 cores, README "Executors": 1.02x to 1.10x the in-process
throughput, for about 1.3 GB more memory; the default stays in-process until that is
re-measured with the whole test suite on workers). ``ray``: Ray actors on a local instance, or
on the cluster at ``--ray-address``; as many workers as the cluster has CPUs free unless told.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.executors import Executor, LocalExecutor
from smpq_onnx.errors import InvalidArgumentError

EXECUTORS = ("local", "ray")


@dataclass
class ExecutorChoice:
    name: str = "local"
    workers: int | None = None
    """None: sized to the cores (local) or to the cluster's free CPUs (ray)."""
    address: str | None = None
    started: Executor | None = field(default=None, repr=False)

    def check(self) -> ExecutorChoice:
        if self.name not in EXECUTORS:
            raise InvalidArgumentError(
                f"executor {self.name!r} is not one of {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise InvalidArgumentError(f"--workers must be >= 1, got {self.workers}")
        if self.address is not None and self.name != "ray":
            raise InvalidArgumentError("--ray-address needs --executor ray")
        return self

    def attach(self, evaluator: Evaluator) -> None:
        """Give ``evaluator`` its executor (none: it evaluates in this process)."""
        cuda = evaluator.runtime.providers()[0] == "CUDAExecutionProvider"
        if self.name == "ray":
            from smpq_onnx.engine.ray_executor import RayExecutor

            self.started = RayExecutor(evaluator.worker_spec(), self.workers,
                                       address=self.address, cuda=cuda)
        else:
            workers = self.workers or 1
            if workers > 1:
                self.started = LocalExecutor(evaluator.worker_spec(), workers)
            self.workers = workers
        evaluator.executor = self.started

    def close(self, evaluator: Evaluator) -> None:
        evaluator.executor = None
        if self.started is not None:
            self.started.close()

    def describe(self, evaluator: Evaluator) -> dict[str, Any]:
        """For the report: executor, workers and evaluations per worker."""
        started = self.started
        if started is None:
            return {"name": self.name, "workers": 1, "in_process": True,
                    "per_worker": {"search process": evaluator.n_evaluations},
                    "restarts": 0}
        per_worker = {f"worker {k}": n for k, (_, n) in enumerate(sorted(started.counts.items()))}
        # Batches of one policy (a final check, a hill climb's start) run in the search process.
        per_worker["search process"] = evaluator.n_evaluations - sum(started.counts.values())
        return {"name": started.name, "workers": started.workers, "in_process": False,
                "address": self.address, "per_worker": per_worker,
                "restarts": started.restarts}
