"""``smpq-onnx eval``: the metric of a policy against FP32 on an evaluation set."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from smpq_onnx.cli.options import policy_options, resolve_policy, runtime_config, runtime_options
from smpq_onnx.cli.progress import TerminalProgress

from smpq_onnx.context import build_context
from smpq_onnx.runtime import describe_provider

DEFAULT_HW = "flexible"


@click.command("eval")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--data", help="Evaluation data: .npz, image folder[:preset] or module:function "
              "(default with no MODEL: the bundled example's).")
@click.option("--calib-data", help="Calibration data (default: the last quarter of --data, at "
              "most 256 samples, kept out of the evaluation).")
@click.option("--metric", help="top1, agreement, kl, sqnr, cosine or module:function "
              "(default: top1 with labels, else agreement).")
@click.option("--hw", "hw_name", default=DEFAULT_HW, show_default=True,
              help="Device profile (legal bit-widths, activation symmetry).")
@policy_options
@click.option("--calibration", "activation_range", default="auto", show_default=True,
              type=click.Choice(["auto", "mse", "minmax", "percentile"]),
              help="Activation range per (tensor, bits); auto: MSE below 8 bits, else "
              "99.99th percentile.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@runtime_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(model: Path | None, data: str | None, calib_data: str | None,
                 metric: str | None, hw_name: str, bits: str | None, policy_path: Path | None,
                 default_bits: str | None, activation_range: str, batch_size: int,
                 provider: str, threads: int, optimization: str, as_json: bool) -> None:
    """Evaluate MODEL (default: the bundled example) in FP32 and at a bit-width policy."""
    start = time.perf_counter()
    runtime = runtime_config(provider, threads, optimization)
    with TerminalProgress(enabled=not as_json) as progress:
        context = build_context(model, hw=hw_name, data=data, calib_data=calib_data,
                                metric=metric, runtime=runtime,
                                activation_range=activation_range,  # type: ignore[arg-type]
                                batch_size=batch_size, progress=progress)
    policy = resolve_policy(context.space, bits=bits, policy_path=policy_path,
                            default_bits=default_bits, fallback=context.profile.default_option)
    result = context.evaluator.evaluate(policy)
    deployed = context.evaluator.evaluate_deployed(policy)
    report: dict[str, Any] = {
        "model": context.model.source, "profile": context.profile.name,
        "metric": context.metric.name, "fp32": context.evaluator.fp32_score,
        "quantized": result.score, "deployed": deployed.score, "n": result.n_samples,
        "policy": policy.to_json_dict(), "provider": describe_provider(runtime),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    scale, unit = (100.0, " %") if context.metric.percent else (1.0, "")
    fp32, quantized = report["fp32"] * scale, report["quantized"] * scale
    shipped = report["deployed"] * scale
    options = sorted({str(o) for o in policy.values()})
    label = options[0] if len(options) == 1 else f"mixed ({len(options)} options)"
    click.echo(f"model {report['model']}, {report['n']} samples, metric {report['metric']}, "
               f"{report['provider']}")
    click.echo(f"  FP32        {fp32:10.4f}{unit}")
    click.echo(f"  {label:<11} {quantized:10.4f}{unit}   ({quantized - fp32:+.4f}"
               f"{' pt' if context.metric.percent else ''})   fake-quant engine")
    click.echo(f"  {label:<11} {shipped:10.4f}{unit}   ({shipped - fp32:+.4f}"
               f"{' pt' if context.metric.percent else ''})   emitted QDQ model")
