"""Quantizer groups: layers whose input activations must share one quantizer.

Layers join a group when
- they read the same activation tensor (one quantizer per tensor), or
- their input tensors are tied by a scale-sharing op the profile names (e.g. integer Concat:
  inputs and output share one scale), followed through scale-preserving ops (Relu, MaxPool,
  Reshape, ...), or
- they share one weight tensor.
Every layer of a group takes the same activation bit-width (and the same weight bit-width when
the weight is shared). Each layer is in exactly one group; most groups have one layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from smpq_onnx.model.dataflow import SCALE_PRESERVING_OPS, Dataflow
from smpq_onnx.model.layers import QuantizableLayer


@dataclass(frozen=True)
class QuantizerGroup:
    name: str
    layers: tuple[str, ...]
    shares_weight: bool = False


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, items: Iterable[str]) -> None:
        roots = [self.find(i) for i in items]
        for other in roots[1:]:
            self.parent[self.find(other)] = self.find(roots[0])


def find_quantizer_groups(layers: tuple[QuantizableLayer, ...], flow: Dataflow, *,
                          shared_scale_ops: Iterable[str] = ()) -> tuple[QuantizerGroup, ...]:
    shared_ops = frozenset(shared_scale_ops)
    tensors = _UnionFind()
    for node, op_type in flow.op_type.items():
        inputs, outputs = flow.op_inputs[node], flow.op_outputs[node]
        if op_type in shared_ops:
            tensors.union([*inputs, *outputs[:1]])
        elif op_type in SCALE_PRESERVING_OPS and inputs and outputs:
            tensors.union([inputs[0], outputs[0]])

    members = _UnionFind()
    by_domain: dict[str, str] = {}
    by_weight: dict[str, str] = {}
    shared_weights: set[str] = set()
    for layer in layers:
        members.find(layer.name)
        domain = tensors.find(layer.activation)
        if domain in by_domain:
            members.union([by_domain[domain], layer.name])
        by_domain.setdefault(domain, layer.name)
        if layer.weight in by_weight:
            members.union([by_weight[layer.weight], layer.name])
            shared_weights.add(layer.weight)
        by_weight.setdefault(layer.weight, layer.name)

    grouped: dict[str, list[QuantizableLayer]] = {}
    for layer in layers:
        grouped.setdefault(members.find(layer.name), []).append(layer)
    groups = []
    for group_layers in grouped.values():
        names = tuple(layer.name for layer in group_layers)
        groups.append(QuantizerGroup(
            name=names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})",
            layers=names,
            shares_weight=any(layer.weight in shared_weights for layer in group_layers),
        ))
    return tuple(groups)
