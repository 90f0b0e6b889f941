"""smpq-onnx: hardware-aware mixed-precision quantization of ONNX models (SMPQ).

The public API, for notebooks and scripts (keyword-only options, typed results, typed errors
from :mod:`smpq_onnx.errors`)::

    import smpq_onnx
    costs = smpq_onnx.profile("model.onnx", hw="npu", bits="W4A8")        # ProfileResult
    score = smpq_onnx.evaluate("model.onnx", data="calib.npz", bits="W8A8")  # EvaluationResult
    found = smpq_onnx.search("model.onnx", hw="npu", data="calib.npz")    # SearchOutcome
    smpq_onnx.apply("model.onnx", policy=found.policy, calib_data="calib.npz",
                    out="model.qdq.onnx")                                  # ApplyResult

The operations are imported on first use, so ``import smpq_onnx`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from smpq_onnx._version import __version__

if TYPE_CHECKING:
    from smpq_onnx.api.applying import apply
    from smpq_onnx.api.evaluation import evaluate
    from smpq_onnx.api.profiling import profile
    from smpq_onnx.api.results import (
        ApplyCheck,
        ApplyResult,
        EvaluationResult,
        ProfileResult,
        SearchOutcome,
    )
    from smpq_onnx.api.searching import search
    from smpq_onnx.quant.options import Option
    from smpq_onnx.quant.policy import Policy

_PUBLIC = {
    "profile": "smpq_onnx.api.profiling",
    "evaluate": "smpq_onnx.api.evaluation",
    "search": "smpq_onnx.api.searching",
    "apply": "smpq_onnx.api.applying",
    "ProfileResult": "smpq_onnx.api.results",
    "EvaluationResult": "smpq_onnx.api.results",
    "SearchOutcome": "smpq_onnx.api.results",
    "ApplyResult": "smpq_onnx.api.results",
    "ApplyCheck": "smpq_onnx.api.results",
    "Policy": "smpq_onnx.quant.policy",
    "Option": "smpq_onnx.quant.options",
}

__all__ = [
    "ApplyCheck", "ApplyResult", "EvaluationResult", "Option", "Policy", "ProfileResult",
    "SearchOutcome", "__version__", "apply", "evaluate", "profile", "search",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'smpq_onnx' has no attribute {name!r}")
