"""The search space: each layer's legal options under a device profile, and quantizer groups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from smpq_onnx.errors import PolicyError
from smpq_onnx.hardware.profile import DeviceProfile
from smpq_onnx.model.groups import QuantizerGroup, find_quantizer_groups
from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.quant.options import FP32, Option
from smpq_onnx.quant.policy import Policy


@dataclass(frozen=True)
class SearchSpace:
    layers: tuple[QuantizableLayer, ...]
    options: Mapping[str, tuple[Option, ...]]
    groups: tuple[QuantizerGroup, ...]

    @classmethod
    def build(cls, model: ImportedModel, profile: DeviceProfile) -> SearchSpace:
        options = {
            layer.name: (FP32,) if layer.op_type in profile.ops.unquantizable else profile.options
            for layer in model.layers
        }
        groups = find_quantizer_groups(model.layers, model.flow,
                                       shared_scale_ops=profile.ops.shared_scale)
        return cls(layers=model.layers, options=options, groups=groups)

    def group_of(self, layer_name: str) -> QuantizerGroup:
        for group in self.groups:
            if layer_name in group.layers:
                return group
        raise KeyError(layer_name)

    def uniform(self, option: Option) -> Policy:
        """Every layer at ``option``; layers that can only stay in float stay in float."""
        chosen = {}
        for layer in self.layers:
            legal = self.options[layer.name]
            if option in legal:
                chosen[layer.name] = option
            elif legal == (FP32,):
                chosen[layer.name] = FP32
            else:
                allowed = ", ".join(str(o) for o in legal)
                raise PolicyError(f"option {option} is not allowed by the profile "
                                  f"(allowed: {allowed})")
        return Policy(chosen)

    def validate(self, policy: Policy) -> Policy:
        """Check that ``policy`` names every layer once with a legal option, groups respected."""
        names = {layer.name for layer in self.layers}
        unknown = sorted(set(policy) - names)
        if unknown:
            raise PolicyError(f"policy names unknown layer(s) {_few(unknown)}; "
                              "see `smpq-onnx profile MODEL` for layer names")
        missing = [layer.name for layer in self.layers if layer.name not in policy]
        if missing:
            raise PolicyError(f"policy misses layer(s) {_few(missing)}; add them or give "
                              "--default-bits")
        for name, option in policy.items():
            if option not in self.options[name]:
                allowed = ", ".join(str(o) for o in self.options[name])
                raise PolicyError(f"layer '{name}': {option} is not allowed by the profile "
                                  f"(allowed: {allowed})")
        for group in self.groups:
            a_bits = {policy[name].a_bits for name in group.layers}
            w_bits = {policy[name].w_bits for name in group.layers}
            if len(a_bits) > 1 or (group.shares_weight and len(w_bits) > 1):
                raise PolicyError(
                    f"layers {_few(list(group.layers))} share a quantizer and need the same "
                    "bit-width; give them one option"
                )
        return policy


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
