"""``evaluate``: the metric of FP32 and of a policy, simulated and as the emitted QDQ model."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from smpq_onnx.api.choices import (
    PolicyLike,
    one_of,
    policy_weight_bits,
    resolve_policy,
    rounding_settings,
    runtime_config,
)
from smpq_onnx.api.context import DEFAULT_ROUNDING, Progress, build_context
from smpq_onnx.api.results import EvaluationResult
from smpq_onnx.engine.evaluator import DEFAULT_BATCH_SIZE
from smpq_onnx.errors import InvalidArgumentError
from smpq_onnx.model.runtime import describe_provider

DEFAULT_HW = "flexible"
ACTIVATION_RANGES = ("auto", "mse", "minmax", "percentile")


def evaluate(model: str | Path | None = None, *, data: str | Path | None = None,
             calib_data: str | Path | None = None, metric: str | None = None,
             hw: str = DEFAULT_HW, bits: str | None = None, policy: PolicyLike | None = None,
             default_bits: str | None = None, activation_range: str = "auto",
             batch_size: int = DEFAULT_BATCH_SIZE, rounding: str = DEFAULT_ROUNDING.method,
             bias_correction: bool = DEFAULT_ROUNDING.bias_correction,
             scale_search: bool = DEFAULT_ROUNDING.scale_search,
             provider: str = "auto", threads: int = 0,
             optimization: str = "all",
             input_shapes: Mapping[str, Sequence[int]] | None = None,
             progress: Progress | None = None) -> EvaluationResult:
    """Evaluate ``model`` (default: the bundled example and its data) in FP32 and at a policy.

    Without ``calib_data`` the last quarter of ``data`` (at most 256 samples) calibrates and
    the rest evaluates. ``metric``: top1, agreement, kl, sqnr, cosine or ``module:function``
    (default: top1 or agreement on class scores, else cosine). ``input_shapes`` (input ->
    full shape, batch 1) fixes symbolic dimensions besides the batch; without it they take
    the shape of the data's first sample.
    """
    start = time.perf_counter()
    one_of(activation_range, ACTIVATION_RANGES, "activation range (--calibration)")
    if batch_size < 1:
        raise InvalidArgumentError(f"batch size must be >= 1, got {batch_size}")
    runtime = runtime_config(provider, threads, optimization)
    context = build_context(model, hw=hw, data=data, calib_data=calib_data, metric=metric,
                            runtime=runtime,
                            activation_range=activation_range,  # type: ignore[arg-type]
                            batch_size=batch_size,
                            rounding=rounding_settings(rounding, bias_correction, scale_search),
                            input_shapes=input_shapes, progress=progress,
                            weight_bits=policy_weight_bits(bits, policy))
    chosen = resolve_policy(context.space, bits=bits, policy=policy, default_bits=default_bits,
                            fallback=context.profile.default_option)
    simulated = context.evaluator.evaluate(chosen)
    deployed = context.evaluator.evaluate_deployed(chosen)
    return EvaluationResult(
        model=context.model.source, profile=context.profile.name, metric=context.metric.name,
        fp32=context.evaluator.fp32_score, quantized=simulated.score, deployed=deployed.score,
        n=simulated.n_samples, policy=chosen, provider=describe_provider(runtime),
        seconds=round(time.perf_counter() - start, 3), percent=context.metric.percent)
