"""``smpq-onnx profile``: per-layer costs of a policy and totals against the device's limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from smpq_onnx.api.profiling import DEFAULT_PROFILE_HW as DEFAULT_HW
from smpq_onnx.api.profiling import profile as profile_model
from smpq_onnx.cli.options import input_shape_option, policy_options
from smpq_onnx.cli.render import human, table


@click.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--hw", "hw_name", default=DEFAULT_HW, show_default=True,
              help="Device profile: a built-in name (see `hw list`) or a .yaml path.")
@policy_options
@input_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def profile(model: Path | None, hw_name: str, bits: str | None, policy_path: Path | None,
            default_bits: str | None, input_shapes: dict[str, tuple[int, ...]] | None,
            as_json: bool) -> None:
    """Cost of MODEL (default: the bundled example) at a bit-width policy on a device."""
    report = profile_model(model, hw=hw_name, bits=bits, policy=policy_path,
                           default_bits=default_bits,
                           input_shapes=input_shapes).to_json_dict()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(_render(report))


def _render(report: dict[str, Any]) -> str:
    rows = []
    for layer in report["layers"]:
        options = layer["options"]
        allowed = ",".join(options) if len(options) <= 4 else f"{len(options)} options"
        bits = "FP32" if layer["w_bits"] == 32 == layer["a_bits"] else \
            f"W{layer['w_bits']}A{layer['a_bits']}"
        rows.append([layer["name"], layer["op_type"], human(layer["macs"]), human(layer["params"]),
                     allowed, bits, human(layer["bops"]), human(layer["weight_bytes"], "B")])
    totals = report["totals"]
    units = {"bops": "", "weight_bytes": "B", "peak_activation_bytes": "B", "latency_s": "s"}
    lines = [
        f"model {report['model']} on profile {report['profile']}, per sample at input "
        + ", ".join(f"{name}={'x'.join(str(d) for d in dims)}"
                    for name, dims in report["input_shapes"].items()),
        "",
        table(["layer", "op", "MACs", "params", "allowed", "bits", "BOPs", "weights"], rows,
              right_align=[False, False, True, True, False, False, True, True]),
        "",
        f"total: {len(report['layers'])} layers, {human(totals['macs'])} MACs, "
        f"{human(totals['params'])} params",
    ]
    limits = {line["resource"]: line for line in report["limits"]}
    for resource, unit in units.items():
        value = totals[resource]
        if value is None and resource not in limits:
            continue
        text = f"  {resource:<22} {human(value, unit):>12}"
        if resource in limits:
            line = limits[resource]
            verdict = "fits" if line["fits"] else "OVER"
            text += f"  limit {human(line['limit'], unit):>12}  {verdict}"
        lines.append(text)
    lines.append(f"fits the device: {'yes' if report['fits'] else 'NO'}")
    return "\n".join(lines)
