"""Typed results of the public API: the same data the CLI's ``--json`` prints.

Each result is frozen and has ``to_json_dict()``, the exact object ``--json`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smpq_onnx.quant.policy import Policy


@dataclass(frozen=True)
class ProfileResult:
    """Per-layer costs of a policy and the totals against the device's limits."""

    model: str
    profile: str
    policy: Policy
    totals: dict[str, Any]
    """``macs``, ``bops``, ``weight_bytes``, ``peak_activation_bytes``, ``latency_s``, ..."""
    limits: list[dict[str, Any]]
    """One ``{resource, used, limit, fits}`` per limit of the profile."""
    layers: list[dict[str, Any]]
    fits: bool
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    """Graph input -> the shape (batch 1) the costs are for."""
    float_subgraph_layers: list[str] = field(default_factory=list)
    """Layer-type nodes inside If/Loop/Scan bodies: carried through in float, not costed."""

    def to_json_dict(self) -> dict[str, Any]:
        return {"model": self.model, "profile": self.profile,
                "input_shapes": self.input_shapes, "totals": self.totals,
                "limits": self.limits, "layers": self.layers, "fits": self.fits,
                "float_subgraph_layers": self.float_subgraph_layers}


@dataclass(frozen=True)
class EvaluationResult:
    """The metric of FP32 and of a policy (simulated and as the emitted QDQ model)."""

    model: str
    profile: str
    metric: str
    fp32: float
    quantized: float
    """The fake-quant engine's metric (what searches optimize)."""
    deployed: float
    """The emitted QDQ model's metric, run as it is."""
    n: int
    policy: Policy
    provider: str
    seconds: float
    percent: bool = False
    """The metric is a fraction of samples, shown in percent (not part of the JSON)."""

    def to_json_dict(self) -> dict[str, Any]:
        return {"model": self.model, "profile": self.profile, "metric": self.metric,
                "fp32": self.fp32, "quantized": self.quantized, "deployed": self.deployed,
                "n": self.n, "policy": self.policy.to_json_dict(), "provider": self.provider,
                "seconds": self.seconds}


@dataclass(frozen=True)
class ApplyCheck:
    """The written file's metric in a fresh session against the evaluator's."""

    metric: str
    n: int
    emitted: float
    deployed: float
    evaluator: float
    match: bool


@dataclass(frozen=True)
class ApplyResult:
    """Where the QDQ model and its encodings were written, and the check when data was given."""

    out: Path
    encodings: Path
    opset: int
    ir_version: int
    policy: Policy
    check: ApplyCheck | None

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"out": str(self.out), "encodings": str(self.encodings),
                                "opset": self.opset, "ir_version": self.ir_version}
        if self.check is not None:
            c = self.check
            data.update({"metric": c.metric, "n": c.n, "emitted": c.emitted,
                         "deployed": c.deployed, "evaluator": c.evaluator, "match": c.match})
        return data


@dataclass(frozen=True)
class SearchOutcome:
    """A finished search: the chosen policy, its metric and the full report (``report.json``).

    ``target_missed`` is set when ``max_drop`` was given and no policy met it: the best policy
    found was still written (the CLI exits with code 4).
    """

    policy: Policy
    final: float
    """The emitted model's metric on the evaluation data."""
    fp32: float
    out_dir: Path
    report: dict[str, Any]
    target_missed: str | None = None
    percent: bool = False
    """The metric is a fraction of samples, shown in percent (not part of the JSON)."""

    def to_json_dict(self) -> dict[str, Any]:
        return self.report
