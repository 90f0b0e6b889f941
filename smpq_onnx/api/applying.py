"""``apply``: write the deployable QDQ model (and encodings) of a policy, checked on data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from smpq_onnx.api.choices import (
    PolicyLike,
    policy_weight_bits,
    resolve_policy,
    rounding_settings,
    runtime_config,
    writable_file,
)
from smpq_onnx.api.context import (
    DEFAULT_ROUNDING,
    SEARCH_UNLABELED_METRIC,
    Progress,
    build_context,
)
from smpq_onnx.api.results import ApplyCheck, ApplyResult
from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.errors import DataError
from smpq_onnx.export.emit import encodings, save_model_atomic, write_json_atomic
from smpq_onnx.quant.policy import Policy

DEFAULT_HW = "flexible"


def apply(model: str | Path | None = None, *, out: str | Path, bits: str | None = None,
          policy: PolicyLike | None = None, default_bits: str | None = None,
          calib_data: str | Path | None = None, data: str | Path | None = None,
          hw: str = DEFAULT_HW, encodings_path: str | Path | None = None,
          native_int4: bool = False, metric: str | None = None,
          rounding: str = DEFAULT_ROUNDING.method,
          bias_correction: bool = DEFAULT_ROUNDING.bias_correction,
          scale_search: bool = DEFAULT_ROUNDING.scale_search, provider: str = "auto",
          threads: int = 0, optimization: str = "all",
          input_shapes: Mapping[str, Sequence[int]] | None = None,
          progress: Progress | None = None) -> ApplyResult:
    """Emit ``model`` (default: the bundled example) quantized by a policy as a QDQ model.

    Writes ``out`` and the encodings JSON (default: beside ``out``) atomically. With ``data``
    (or the bundled example) the written file is run in a fresh ONNX Runtime session and
    checked against the evaluator's run of the same emitted model. ``input_shapes`` (input ->
    full shape, batch 1) fixes symbolic dimensions besides the batch (else the data's first
    sample does); the written model has those sizes.
    """
    if model is not None and calib_data is None and data is None:
        raise DataError("apply needs calibration data: give --calib-data (or --data)")
    out_path = writable_file(Path(out))
    if encodings_path is not None:
        writable_file(Path(encodings_path), "--encodings")
    runtime = runtime_config(provider, threads, optimization)
    context = build_context(model, hw=hw, data=data, calib_data=calib_data, metric=metric,
                            runtime=runtime,
                            rounding=rounding_settings(rounding, bias_correction, scale_search),
                            input_shapes=input_shapes, progress=progress,
                            weight_bits=policy_weight_bits(bits, policy),
                            unlabeled_metric=SEARCH_UNLABELED_METRIC)
    chosen = resolve_policy(context.space, bits=bits, policy=policy, default_bits=default_bits,
                            fallback=context.profile.default_option)
    emitted = context.evaluator.deployed_model(chosen, native_int4=native_int4)
    written_encodings = (Path(encodings_path) if encodings_path is not None
                         else out_path.with_suffix(".encodings.json"))
    save_model_atomic(emitted, out_path)
    write_json_atomic(encodings(context.model, chosen, context.calibration), written_encodings)
    check = None
    if data is not None or model is None:
        check = check_written(out_path, context.evaluator, chosen, native_int4=native_int4)
    return ApplyResult(out=out_path, encodings=written_encodings,
                       opset=emitted.opset_import[0].version, ir_version=emitted.ir_version,
                       policy=chosen, check=check)


def check_written(path: Path, evaluator: Evaluator, policy: Policy, *,
                  native_int4: bool) -> ApplyCheck:
    """The written file's metric in a fresh session against the evaluator's for the policy.

    ``deployed`` is the evaluator's run of the same emitted model (what ``search`` reports):
    the file must match it. ``evaluator`` is the fake-quant engine's estimate (what the search
    optimized), shown with its gap.
    """
    emitted = evaluator.score_outputs(evaluator.run_model(path.read_bytes()))
    deployed = evaluator.evaluate_deployed(policy, native_int4=native_int4).score
    fast = evaluator.evaluate(policy).score
    tolerance = 0.001 if evaluator.metric.percent else 1e-3 * max(abs(deployed), 1e-12)
    return ApplyCheck(metric=evaluator.metric.name, n=len(evaluator.data), emitted=emitted,
                      deployed=deployed, evaluator=fast,
                      match=abs(emitted - deployed) <= tolerance)
