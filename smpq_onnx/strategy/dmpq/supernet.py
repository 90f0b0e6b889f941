"""The DMPQ (EdMIPS) supernet: every unit runs a softmax mixture of its bit-widths.

Per unit k of the game (a quantizer group; all its layers share one option):

- split-sides games: logits alpha_w[k] over the unit's weight bit-widths and alpha_a[k] over
  its activation bit-widths; p_w = softmax(alpha_w), p_a = softmax(alpha_a) and the joint
  distribution over options P(W, A) = p_w(W) p_a(A) (the sides are independent);
- joint games (the profile allows only some (W, A) pairs): logits alpha[k] over the unit's
  options; P = softmax(alpha) and the side marginals p_w, p_a are sums of P.

Each layer l of unit k then computes, with its weights frozen::

    W_l = sum_b p_w(b) Q_b(W_l)          Q_b: the calibrated weight quantizer (Calibration)
    x_l = sum_b p_a(b) Q_b(x_l)          Q_b: the calibrated activation quantizer
    b_l = sum_o P(o) B_o(b_l)            B_o: the int32-quantized bias at option o (if owned)

Q_b are exactly the quantizers of the ONNX evaluator (same scales, zero points, clipping and
round-half-to-even), so a one-hot alpha gives that policy's evaluator outputs. Rounding uses a
straight-through estimator: d Q_b(x) / dx = 1 inside the clipping range, 0 outside; the
gradient reaches alpha through the mixture weights p.

Complexity (EdMIPS, normalised): E[BOPs] / W8A8 BOPs = sum_k sum_o P_k(o) BOPs_k(o) /
(sum_l MACs_l * 64), which for split games is sum_l MACs_l E[b_w] E[b_a] / (sum_l MACs_l * 64).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.hardware.budget import W8A8_BITS
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.calibration import Calibration
from smpq_onnx.quant.options import Option
from smpq_onnx.strategy.dmpq.torch_graph import TorchGraph
from smpq_onnx.strategy.game import QuantizationGame

Tensor = torch.Tensor


@dataclass(frozen=True)
class ActivationQuantizer:
    """One calibrated activation quantizer (the evaluator's, from :class:`Calibration`)."""

    scale: Tensor
    """float32, 0-d."""
    zero_point: int
    qmin: int
    qmax: int

    @property
    def low(self) -> float:
        """Below this input value every code clips to qmin (straight-through gradient 0)."""
        return (self.qmin - self.zero_point - 0.5) * float(self.scale)

    @property
    def high(self) -> float:
        return (self.qmax - self.zero_point + 0.5) * float(self.scale)

    def steps(self, x: Tensor) -> Tensor:
        """clip(round(x / s) + z, qmin, qmax) - z: the quantized value in units of s.

        As the numpy reference: x is divided by s in float32 (torch's fused kernel alone would
        multiply by 1/s, an ulp away, which flipped codes in 9 of 750 W8A8 outputs of the
        bundled example); the fused kernel at scale 1 then rounds half to even, shifts, clips.
        """
        return torch.fake_quantize_per_tensor_affine(x / self.scale, 1.0, self.zero_point,
                                                     self.qmin, self.qmax)


class ActivationMixture(torch.autograd.Function):
    """y = sum_b p_b Q_b(x), Q_b(x) = s_b * steps_b(x), with a straight-through estimator.

    Backward: dL/dp_b = s_b <g, steps_b(x)> and dL/dx = g * sum_b p_b [low_b <= x <= high_b]
    (the sum is a step function of x, looked up per element). Q_b(x) is recomputed in the
    backward pass instead of saved: memory stays at one copy of x per layer. With p one-hot,
    y is bit for bit the reference fake quantization (p_b s_b = s_b exactly).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weights: Tensor,
                *quantizers: ActivationQuantizer) -> Tensor:
        ctx.quantizers = quantizers
        ctx.save_for_backward(x, weights)
        total = torch.zeros_like(x)
        for b, quantizer in enumerate(quantizers):
            total.add_(quantizer.steps(x), alpha=float(weights[b]) * float(quantizer.scale))
        return total

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = grads
        x, weights = ctx.saved_tensors
        quantizers: tuple[ActivationQuantizer, ...] = ctx.quantizers
        flat = grad.reshape(-1)
        grad_w = torch.stack([q.scale * torch.dot(flat, q.steps(x).reshape(-1))
                              for q in quantizers])
        grad_x = None
        if ctx.needs_input_grad[0]:
            edges = sorted({q.low for q in quantizers} | {q.high for q in quantizers})
            # bucketize: index 0 below edges[0], k between edges[k-1] and edges[k], then above.
            middles = [edges[0] - 1.0, *((a + b) / 2 for a, b in itertools.pairwise(edges)),
                       edges[-1] + 1.0]
            slope = [sum(float(weights[b]) for b, q in enumerate(quantizers)
                         if q.low <= m <= q.high) for m in middles]
            index = torch.bucketize(x, torch.tensor(edges, dtype=x.dtype))
            grad_x = grad * torch.tensor(slope, dtype=x.dtype)[index]
        return (grad_x, grad_w, *([None] * len(quantizers)))


@dataclass(frozen=True)
class UnitMix:
    """The current distributions of one unit: side marginals and the joint over options."""

    w: Tensor
    a: Tensor
    joint: Tensor


@dataclass(frozen=True)
class _UnitTable:
    options: tuple[Option, ...]
    w_bits: tuple[int, ...]
    a_bits: tuple[int, ...]
    w_of: Tensor
    """Per option, the index of its weight bit-width in ``w_bits``."""
    a_of: Tensor
    bops: Tensor
    """Per option, the unit's BOPs (float64)."""


class BitMixture(torch.nn.Module):
    """The learnable alpha of every unit and the mixture hooks for :class:`TorchGraph`."""

    def __init__(self, game: QuantizationGame, calibration: Calibration,
                 costs: CostModel) -> None:
        super().__init__()
        self.game = game
        self.split = game.split_sides
        model = calibration.model
        self.alphas = torch.nn.ParameterDict()
        self.tables: list[_UnitTable] = []
        self.unit_of: dict[str, int] = {}
        self.weights: dict[str, Tensor] = {}
        self.quantizers: dict[str, tuple[ActivationQuantizer, ...]] = {}
        self.biases: dict[str, Tensor] = {}
        for k, unit in enumerate(game.units):
            w_bits = tuple(sorted({o.w_bits for o in unit.options}))
            a_bits = tuple(sorted({o.a_bits for o in unit.options}))
            bops = [sum(costs.layer_bops(name, o) for name in unit.layers) for o in unit.options]
            self.tables.append(_UnitTable(
                unit.options, w_bits, a_bits,
                torch.tensor([w_bits.index(o.w_bits) for o in unit.options]),
                torch.tensor([a_bits.index(o.a_bits) for o in unit.options]),
                torch.tensor(bops, dtype=torch.float64)))
            if self.split:
                self.alphas[f"{k}_w"] = torch.nn.Parameter(torch.zeros(len(w_bits)))
                self.alphas[f"{k}_a"] = torch.nn.Parameter(torch.zeros(len(a_bits)))
            else:
                self.alphas[f"{k}_wa"] = torch.nn.Parameter(torch.zeros(len(unit.options)))
            for name in unit.layers:
                layer = model.layer(name)
                self.unit_of[name] = k
                self.weights[name] = torch.stack(
                    [torch.from_numpy(np.array(calibration.weight(layer, b))) for b in w_bits])
                self.quantizers[name] = tuple(
                    activation_quantizer(calibration, layer.activation, b) for b in a_bits)
                if model.owns_bias(layer):
                    assert layer.bias is not None
                    value = model.ir_model.graph.initializers[layer.bias].const_value
                    assert value is not None
                    original = np.asarray(value.numpy(), dtype=np.float32)
                    rows = []
                    for o in unit.options:
                        deployed = calibration.bias(layer, o.w_bits, o.a_bits)
                        rows.append(original if deployed is None else deployed)
                    self.biases[name] = torch.from_numpy(np.stack(rows).astype(np.float32))
        self.w8a8_bops = float(model.total_macs * W8A8_BITS)
        self._mix: list[UnitMix] | None = None

    def reset(self) -> None:
        """Every alpha back to zero (the uniform mixture)."""
        with torch.no_grad():
            for value in self.alphas.values():
                value.zero_()

    def distributions(self) -> list[UnitMix]:
        """Per unit, p_w, p_a and P(option) from the current alpha (differentiable)."""
        mixes = []
        for k, table in enumerate(self.tables):
            if self.split:
                w = torch.softmax(self.alphas[f"{k}_w"], 0)
                a = torch.softmax(self.alphas[f"{k}_a"], 0)
                joint = w[table.w_of] * a[table.a_of]
            else:
                joint = torch.softmax(self.alphas[f"{k}_wa"], 0)
                w = torch.zeros(len(table.w_bits)).index_add(0, table.w_of, joint)
                a = torch.zeros(len(table.a_bits)).index_add(0, table.a_of, joint)
            mixes.append(UnitMix(w, a, joint))
        return mixes

    def bind(self) -> BitMixture:
        """Compute the distributions once for the next forward pass; returns the hooks."""
        self._mix = self.distributions()
        return self

    def complexity(self) -> Tensor:
        """Expected BOPs over W8A8 BOPs under the bound distributions."""
        mix = self._mix if self._mix is not None else self.distributions()
        total = sum((m.joint.double() @ t.bops for m, t in zip(mix, self.tables, strict=True)),
                    torch.zeros((), dtype=torch.float64))
        return (total / self.w8a8_bops).float()

    # LayerHooks --------------------------------------------------------------------------

    # Layers outside every unit (none in the built-in profiles) stay in float.

    def _unit_mix(self, layer: str) -> UnitMix:
        assert self._mix is not None, "call bind() before running the graph"
        return self._mix[self.unit_of[layer]]

    def weight(self, layer: str, value: Tensor) -> Tensor:
        if layer not in self.unit_of:
            return value
        return torch.tensordot(self._unit_mix(layer).w, self.weights[layer], dims=1)

    def activation(self, layer: str, value: Tensor) -> Tensor:
        if layer not in self.unit_of:
            return value
        result: Tensor = ActivationMixture.apply(
            value, self._unit_mix(layer).a, *self.quantizers[layer])
        return result

    def bias(self, layer: str, value: Tensor) -> Tensor:
        table = self.biases.get(layer)
        return value if table is None else self._unit_mix(layer).joint @ table

    # Read-outs -----------------------------------------------------------------------------

    def player_alpha(self) -> np.ndarray:
        """alpha aligned with ``game.players``: the alpha_w, alpha_a or joint entry of each."""
        values = []
        for player in self.game.players:
            table = self.tables[player.unit]
            if player.side == "w":
                value = self.alphas[f"{player.unit}_w"][table.w_bits.index(player.w_bits)]
            elif player.side == "a":
                value = self.alphas[f"{player.unit}_a"][table.a_bits.index(player.a_bits)]
            else:
                option = Option(player.w_bits, player.a_bits)
                value = self.alphas[f"{player.unit}_wa"][table.options.index(option)]
            values.append(float(value.detach()))
        return np.array(values, dtype=np.float64)

    def log_probabilities(self) -> list[np.ndarray]:
        """Per unit, log P(option) in ``unit.options`` order (knapsack utilities)."""
        with torch.no_grad():
            return [np.log(np.maximum(m.joint.double().numpy(), 1e-300))
                    for m in self.distributions()]

    def set_policy(self, choice: list[int], *, sharpness: float = 1e4) -> None:
        """Alpha that makes the mixture one-hot on ``choice`` (option index per unit)."""
        with torch.no_grad():
            for k, (table, index) in enumerate(zip(self.tables, choice, strict=True)):
                option = table.options[index]
                if self.split:
                    _one_hot(self.alphas[f"{k}_w"], table.w_bits.index(option.w_bits), sharpness)
                    _one_hot(self.alphas[f"{k}_a"], table.a_bits.index(option.a_bits), sharpness)
                else:
                    _one_hot(self.alphas[f"{k}_wa"], index, sharpness)


def _one_hot(value: Tensor, index: int, sharpness: float) -> None:
    value.zero_()
    value[index] = sharpness


def activation_quantizer(calibration: Calibration, tensor: str,
                         bits: int) -> ActivationQuantizer:
    """The evaluator's quantizer of ``tensor`` at ``bits``, from the calibration."""
    p = calibration.activation(tensor, bits)
    return ActivationQuantizer(torch.tensor(p.scale, dtype=torch.float32), p.zero_point, p.qmin,
                               p.qmax)


@dataclass(frozen=True)
class TrainLog:
    """What one training run of alpha did."""

    steps: int
    cd: float
    task_loss: float
    """Mean task loss over the last epoch."""
    complexity: float
    """Expected BOPs / W8A8 BOPs at the end."""
    loss_kind: str
    """``cross_entropy`` (labels) or ``kl`` (distillation from the FP32 outputs)."""


def train_alpha(graph: TorchGraph, mixture: BitMixture, data: Dataset, *, cd: float, lr: float,
                epochs: int, batch_size: int, seed: int, drop_last: bool = False) -> TrainLog:
    """Adam on alpha only (model weights frozen): loss = task + cd * complexity.

    The task loss is cross-entropy with the labels when ``data`` has integer labels that index
    the classes of a 2-D first output, else the KL divergence from the FP32 model's softmax
    (over the last axis of the first output) to the mixture's. The sample order of every epoch
    comes from a generator seeded with ``seed``: the same seed gives the same alpha.
    """
    torch.manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)
    inputs = {name: torch.from_numpy(np.ascontiguousarray(array))
              for name, array in data.inputs.items()}
    n = len(data)
    with torch.no_grad():
        reference = torch.cat([graph({k: v[i:i + batch_size] for k, v in inputs.items()})[0]
                               for i in range(0, n, batch_size)])
    labels = _class_labels(data, reference)
    teacher = None if labels is not None else torch.log_softmax(reference, -1)
    optimizer = torch.optim.Adam(mixture.parameters(), lr=lr)
    steps, losses = 0, list[float]()
    for _ in range(epochs):
        order = torch.randperm(n, generator=order_rng)
        losses = []
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]
            output = graph({k: v[index] for k, v in inputs.items()}, mixture.bind())[0]
            if labels is not None:
                task = torch.nn.functional.cross_entropy(output, labels[index])
            else:
                assert teacher is not None
                task = _kl(teacher[index], torch.log_softmax(output, -1))
            loss = task + cd * mixture.complexity()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            losses.append(float(task.detach()))
    with torch.no_grad():
        complexity = float(mixture.bind().complexity())
    return TrainLog(steps, cd, float(np.mean(losses)) if losses else float("nan"), complexity,
                    "cross_entropy" if labels is not None else "kl")


def _class_labels(data: Dataset, reference: Tensor) -> Tensor | None:
    if data.labels is None or reference.dim() != 2:
        return None
    labels = np.asarray(data.labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        return None
    if len(labels) and (labels.min() < 0 or labels.max() >= reference.shape[1]):
        return None
    return torch.from_numpy(labels.astype(np.int64))


def _kl(target_log: Tensor, log_probs: Tensor) -> Tensor:
    """KL(target || model) summed over the last axis, averaged over the other positions."""
    rows = target_log.numel() // target_log.shape[-1]
    return (target_log.exp() * (target_log - log_probs)).sum() / rows
