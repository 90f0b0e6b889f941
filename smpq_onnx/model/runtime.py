"""ONNX Runtime sessions with one fixed engine configuration for a whole search.

The provider is CUDA when its libraries actually load, else CPU; the choice is logged once, in
one line, instead of onnxruntime's raw error dump. Threads and optimization level are fixed
per :class:`RuntimeConfig` so every evaluation runs the same kernels (see FACTS.md: NCHWc
kernels change accumulation order, which low-bit rounding magnifies).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

logger = logging.getLogger(__name__)

OptimizationLevel = Literal["disable", "basic", "extended", "all"]
_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Re-quantizes float biases in QDQ graphs and shifts outputs (FACTS.md): never wanted here.
DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)


@dataclass(frozen=True)
class RuntimeConfig:
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0
    """Intra-op threads; 0 lets onnxruntime use every core."""
    optimization: OptimizationLevel = "all"
    disabled_optimizers: tuple[str, ...] = field(default=DISABLED_OPTIMIZERS)

    def providers(self) -> list[str]:
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        if self.provider == "cuda" or cuda_available():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def batch_workers(self) -> int:
        """Batches a CPU evaluation runs at once, each session on one intra-op thread.

        Fake-quant graphs are long chains of small elementwise ops, which ORT's intra-op pool
        parallelizes badly (measured on the bundled example, 2 cores: 2 threads took 1.2x the
        wall time of 1 thread); batches are independent, so running them side by side uses
        every core fully. CUDA runs one batch at a time.
        """
        if self.providers()[0] == "CUDAExecutionProvider":
            return 1
        return self.threads or available_cores()

    def session_options(self, *, arena: bool = True,
                        threads: int | None = None) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = arena
        options.intra_op_num_threads = self.threads if threads is None else threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = _LEVELS[self.optimization]
        options.log_severity_level = 3
        return options

    def session(self, model: onnx.ModelProto | bytes, *,
                initializers: Mapping[str, ort.OrtValue] | None = None,
                arena: bool = True, threads: int | None = None) -> ort.InferenceSession:
        """A session; ``arena=False`` returns its memory after each run (for sessions kept
        in a cache, whose arenas would otherwise each hold their peak activations);
        ``threads`` overrides the intra-op thread count."""
        options = self.session_options(arena=arena, threads=threads)
        for name, value in (initializers or {}).items():
            options.add_initializer(name, value)
        data = model if isinstance(model, bytes) else model.SerializeToString()
        return ort.InferenceSession(data, options, providers=self.providers(),
                                    disabled_optimizers=list(self.disabled_optimizers))


@cache
def cuda_available() -> bool:
    """Whether the CUDA provider really runs a node here (logs the choice once)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        logger.info("onnxruntime: CPU (this onnxruntime build has no CUDA provider)")
        return False
    probe = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]),
        opset_imports=[helper.make_opsetid("", 13)])
    probe.ir_version = 8
    previous = 2
    ort.set_default_logger_severity(4)  # silence the loader's error dump during the probe
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(probe.SerializeToString(), options,
                                       providers=["CUDAExecutionProvider"])
        session.run(None, {"x": np.zeros(1, np.float32)})
        works = session.get_providers()[0] == "CUDAExecutionProvider"
    except Exception:  # any failure to load CUDA libraries means: no CUDA
        works = False
    finally:
        ort.set_default_logger_severity(previous)
    logger.info("onnxruntime: %s", "CUDA" if works else
                "CPU (the CUDA provider did not load: no GPU, or its CUDA/cuDNN libraries "
                "are missing)")
    return works


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def describe_provider(config: RuntimeConfig) -> str:
    return "CUDA" if config.providers()[0] == "CUDAExecutionProvider" else "CPU"
