"""``smpq-onnx eval``: the metric of a policy against FP32 on an evaluation set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from smpq_onnx.api.evaluation import DEFAULT_HW, evaluate
from smpq_onnx.cli.options import (
    input_shape_option,
    policy_options,
    rounding_options,
    runtime_options,
)
from smpq_onnx.cli.progress import TerminalProgress


@click.command("eval")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--data", help="Evaluation data: .npz, image folder[:preset] or module:function "
              "(default with no MODEL: the bundled example's).")
@click.option("--calib-data", help="Calibration data (default: the last quarter of --data, at "
              "most 256 samples, kept out of the evaluation).")
@click.option("--metric", help="top1, agreement, kl, sqnr, cosine or module:function "
              "(default: class scores, top1 with labels, else agreement; other outputs, "
              "cosine, over the tokens an attention mask keeps).")
@click.option("--hw", "hw_name", default=DEFAULT_HW, show_default=True,
              help="Device profile (legal bit-widths, activation symmetry).")
@policy_options
@click.option("--calibration", "activation_range", default="auto", show_default=True,
              type=click.Choice(["auto", "mse", "minmax", "percentile"]),
              help="Activation range per (tensor, bits); auto: MSE below 8 bits, else "
              "99.99th percentile.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@rounding_options
@runtime_options
@input_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(model: Path | None, data: str | None, calib_data: str | None,
                 metric: str | None, hw_name: str, bits: str | None, policy_path: Path | None,
                 default_bits: str | None, activation_range: str, batch_size: int,
                 rounding: str, bias_correction: bool, scale_search: bool, provider: str,
                 threads: int, optimization: str,
                 input_shapes: dict[str, tuple[int, ...]] | None, as_json: bool) -> None:
    """Evaluate MODEL (default: the bundled example) in FP32 and at a bit-width policy."""
    with TerminalProgress(enabled=not as_json) as progress:
        result = evaluate(model, data=data, calib_data=calib_data, metric=metric, hw=hw_name,
                          bits=bits, policy=policy_path, default_bits=default_bits,
                          activation_range=activation_range, batch_size=batch_size,
                          rounding=rounding, bias_correction=bias_correction,
            scale_search=scale_search, provider=provider,
            threads=threads, optimization=optimization,
                          input_shapes=input_shapes, progress=progress)
    report = result.to_json_dict()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    scale, unit = (100.0, " %") if result.percent else (1.0, "")
    points = " pt" if result.percent else ""
    fp32, quantized, shipped = result.fp32 * scale, result.quantized * scale, \
        result.deployed * scale
    options = sorted({str(o) for o in result.policy.values()})
    label = options[0] if len(options) == 1 else f"mixed ({len(options)} options)"
    click.echo(f"model {result.model}, {result.n} samples, metric {result.metric}, "
               f"{result.provider}")
    click.echo(f"  FP32        {fp32:10.4f}{unit}")
    click.echo(f"  {label:<11} {quantized:10.4f}{unit}   ({quantized - fp32:+.4f}"
               f"{points})   fake-quant engine")
    click.echo(f"  {label:<11} {shipped:10.4f}{unit}   ({shipped - fp32:+.4f}"
               f"{points})   emitted QDQ model")
