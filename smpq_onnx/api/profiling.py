"""``profile``: per-layer costs of a policy and the totals against the device's limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smpq_onnx.api.choices import PolicyLike, resolve_policy
from smpq_onnx.api.results import ProfileResult
from smpq_onnx.example import example_model_path
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.space import SearchSpace

DEFAULT_PROFILE_HW = "mcu"


def profile(model: str | Path | None = None, *, hw: str = DEFAULT_PROFILE_HW,
            bits: str | None = None, policy: PolicyLike | None = None,
            default_bits: str | None = None,
            input_shapes: Mapping[str, Sequence[int]] | None = None) -> ProfileResult:
    """Cost of ``model`` (default: the bundled example) at a policy on the device ``hw``.

    ``hw`` is a built-in profile name or a YAML path; the policy is ``bits`` for every layer,
    or ``policy`` completed by ``default_bits``, else the profile's default option.
    ``input_shapes`` (input -> full shape, batch 1, e.g. ``{"images": (1, 3, 640, 640)}``)
    fixes symbolic dimensions besides the batch; costs are per sample at those shapes.
    """
    device = load_profile(hw)
    imported = import_model(model if model is not None else example_model_path(),
                            input_shapes=input_shapes)
    space = SearchSpace.build(imported, device)
    chosen = resolve_policy(space, bits=bits, policy=policy, default_bits=default_bits,
                            fallback=device.default_option)
    return profile_result(imported.source, device.name, space, CostModel(imported, device),
                          chosen, Budget.from_profile(device, imported),
                          input_shapes=imported.input_shapes,
                          float_subgraph_layers=imported.float_subgraph_layers)


def profile_result(source: str, device: str, space: SearchSpace, costs: CostModel,
                   policy: Policy, budget: Budget, *,
                   input_shapes: Mapping[str, Sequence[int]] | None = None,
                   float_subgraph_layers: Sequence[str] = ()) -> ProfileResult:
    total = costs.cost(policy)
    checks = budget.check(total)
    layers: list[dict[str, Any]] = []
    for layer in space.layers:
        option = policy[layer.name]
        layers.append({
            "name": layer.name, "op_type": layer.op_type, "group": space.group_of(layer.name).name,
            "macs": layer.macs, "params": layer.params,
            "options": [str(o) for o in space.options[layer.name]],
            "w_bits": option.w_bits, "a_bits": option.a_bits,
            "bops": costs.layer_bops(layer.name, option),
            "weight_bytes": costs.layer_weight_bytes(layer.name, option),
        })
    return ProfileResult(
        model=source, profile=device, policy=policy,
        totals={**total.to_json_dict(), "params": sum(layer.params for layer in space.layers),
                "other_constant_bytes": costs.other_constant_bytes},
        limits=[{"resource": c.resource, "used": c.used, "limit": c.limit, "fits": c.fits}
                for c in checks],
        layers=layers, fits=all(c.fits for c in checks),
        input_shapes={name: [int(d) for d in dims]
                      for name, dims in (input_shapes or {}).items()},
        float_subgraph_layers=list(float_subgraph_layers))
