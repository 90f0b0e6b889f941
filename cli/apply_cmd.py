"""``smpq-onnx apply``: write the deployable QDQ model (and encodings) of a policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from smpq_onnx.cli.options import policy_options, resolve_policy, runtime_config, runtime_options
from smpq_onnx.cli.progress import TerminalProgress

from smpq_onnx.context import build_context
from smpq_onnx.emit import encodings, save_model_atomic, write_json_atomic
from smpq_onnx.errors import DataError
from smpq_onnx.evaluator import Evaluator
from smpq_onnx.policy import Policy


@click.command("apply")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@policy_options
@click.option("--calib-data", help="Calibration data (.npz, image folder, module:function).")
@click.option("--data", help="Evaluation data: the emitted model is checked against the "
              "evaluator on it (without --calib-data, its last quarter calibrates).")
@click.option("--hw", "hw_name", default="flexible", show_default=True, help="Device profile.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Where to write the QDQ model (.onnx).")
@click.option("--encodings", "encodings_path", type=click.Path(path_type=Path),
              help="Where to write per-tensor encodings JSON (default: next to --out).")
@click.option("--native-int4", is_flag=True, help="Store <= 4-bit weights as native int4 "
              "(opset 21) instead of int8 containers.")
@click.option("--metric", help="Metric for the check (default: top1 with labels, else "
              "agreement).")
@runtime_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def apply_command(model: Path | None, bits: str | None, policy_path: Path | None,
                  default_bits: str | None, calib_data: str | None, data: str | None,
                  hw_name: str, out_path: Path, encodings_path: Path | None, native_int4: bool,
                  metric: str | None, provider: str, threads: int, optimization: str,
                  as_json: bool) -> None:
    """Emit MODEL (default: the bundled example) quantized by a policy as a QDQ ONNX model."""
    if model is not None and calib_data is None and data is None:
        raise DataError("apply needs calibration data: give --calib-data (or --data)")
    runtime = runtime_config(provider, threads, optimization)
    with TerminalProgress(enabled=not as_json) as progress:
        context = build_context(model, hw=hw_name, data=data, calib_data=calib_data,
                                metric=metric, runtime=runtime, progress=progress)
    policy = resolve_policy(context.space, bits=bits, policy_path=policy_path,
                            default_bits=default_bits, fallback=context.profile.default_option)
    emitted = context.evaluator.deployed_model(policy, native_int4=native_int4)
    encodings_path = encodings_path or out_path.with_suffix(".encodings.json")
    save_model_atomic(emitted, out_path)
    write_json_atomic(encodings(context.model, policy, context.calibration), encodings_path)

    report: dict[str, Any] = {"out": str(out_path), "encodings": str(encodings_path),
                              "opset": emitted.opset_import[0].version,
                              "ir_version": emitted.ir_version}
    if data is not None or model is None:
        report.update(_check(out_path, context.evaluator, policy, native_int4=native_int4))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"wrote {out_path} (opset {report['opset']}, IR {report['ir_version']}) and "
               f"{encodings_path}")
    if "emitted" in report:
        verdict = "matches" if report["match"] else "DIFFERS FROM"
        click.echo(f"check on {report['n']} samples: {report['metric']} {report['emitted']:.4f} "
                   f"in a fresh ONNX Runtime session, {verdict} the evaluator's run of the "
                   f"emitted model ({report['deployed']:.4f}); fake-quant engine "
                   f"{report['evaluator']:.4f}")


def _check(path: Path, evaluator: Evaluator, policy: Policy, *,
           native_int4: bool) -> dict[str, Any]:
    """The written file's metric in a fresh session against the evaluator's for the policy.

    ``deployed`` is the evaluator's run of the same emitted model (what ``search`` reports):
    the file must match it. ``evaluator`` is the fake-quant engine's estimate (what the search
    optimized), shown with its gap.
    """
    emitted = evaluator.score_outputs(evaluator.run_model(path.read_bytes()))
    deployed = evaluator.evaluate_deployed(policy, native_int4=native_int4).score
    fast = evaluator.evaluate(policy).score
    tolerance = 0.001 if evaluator.metric.percent else 1e-3 * max(abs(deployed), 1e-12)
    return {"metric": evaluator.metric.name, "n": len(evaluator.data), "emitted": emitted,
            "deployed": deployed, "evaluator": fast,
            "match": abs(emitted - deployed) <= tolerance}
