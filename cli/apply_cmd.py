"""``smpq-onnx apply``: write the deployable QDQ model (and encodings) of a policy."""

from __future__ import annotations

import json
from pathlib import Path

import click

from smpq_onnx.api.applying import DEFAULT_HW, apply
from smpq_onnx.cli.options import (
    input_shape_option,
    policy_options,
    rounding_options,
    runtime_options,
)
from smpq_onnx.cli.progress import TerminalProgress


@click.command("apply")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@policy_options
@click.option("--calib-data", help="Calibration data (.npz, image folder, module:function).")
@click.option("--data", help="Evaluation data: the emitted model is checked against the "
              "evaluator on it (without --calib-data, its last quarter calibrates).")
@click.option("--hw", "hw_name", default=DEFAULT_HW, show_default=True, help="Device profile.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Where to write the QDQ model (.onnx).")
@click.option("--encodings", "encodings_path", type=click.Path(path_type=Path),
              help="Where to write per-tensor encodings JSON (default: next to --out).")
@click.option("--native-int4", is_flag=True, help="Store <= 4-bit weights as native int4 "
              "(opset 21) instead of int8 containers.")
@click.option("--metric", help="Metric for the check (default: class scores, top1 with "
              "labels, else kl, as search; other outputs, cosine, over the tokens an "
              "attention mask keeps).")
@rounding_options
@runtime_options
@input_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def apply_command(model: Path | None, bits: str | None, policy_path: Path | None,
                  default_bits: str | None, calib_data: str | None, data: str | None,
                  hw_name: str, out_path: Path, encodings_path: Path | None, native_int4: bool,
                  metric: str | None, rounding: str, bias_correction: bool,
                  scale_search: bool, provider: str, threads: int, optimization: str,
                  input_shapes: dict[str, tuple[int, ...]] | None,
                  as_json: bool) -> None:
    """Emit MODEL (default: the bundled example) quantized by a policy as a QDQ ONNX model."""
    with TerminalProgress(enabled=not as_json) as progress:
        result = apply(model, out=out_path, bits=bits, policy=policy_path,
                       default_bits=default_bits, calib_data=calib_data, data=data, hw=hw_name,
                       encodings_path=encodings_path, native_int4=native_int4, metric=metric,
                       rounding=rounding, bias_correction=bias_correction,
            scale_search=scale_search, provider=provider,
            threads=threads, optimization=optimization,
                       input_shapes=input_shapes, progress=progress)
    if as_json:
        click.echo(json.dumps(result.to_json_dict(), indent=2))
        return
    click.echo(f"wrote {result.out} (opset {result.opset}, IR {result.ir_version}) and "
               f"{result.encodings}")
    check = result.check
    if check is not None:
        verdict = "matches" if check.match else "DIFFERS FROM"
        click.echo(f"check on {check.n} samples: {check.metric} {check.emitted:.4f} "
                   f"in a fresh ONNX Runtime session, {verdict} the evaluator's run of the "
                   f"emitted model ({check.deployed:.4f}); fake-quant engine "
                   f"{check.evaluator:.4f}")
