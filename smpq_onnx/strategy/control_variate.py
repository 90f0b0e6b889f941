"""A layer-separable control variate for Shapley estimation (ALGORITHMS.md).

g(S) = sum over unit sides of h(the player S realizes on that side), where h(player) =
V(only that player present) - V(empty): each unit side quantized alone, everything else at
the reference precision. Under hard semantics a coalition's choice on one unit side depends
only on that side's present players, so g is a sum of independent small games, and its exact
Shapley values come from enumerating each side's players (at most a few dozen coalitions
each). Sampling V - g instead of V removes the part of every marginal contribution that the
single-side measurements already explain; phi(V) = phi(g) + phi(V - g) by linearity.

The table costs one evaluation per player, all of them near-FP32 policies that a segmented
evaluator runs from the changed unit onwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.shapley import (
    BatchValueFunction,
    Progress,
    ShapleyEstimate,
    ValueFunction,
    exact_shapley,
    owen_shapley,
)

MAX_SIDE_PLAYERS = 16  # exact enumeration of one side: 2^16 coalitions at most


class SeparableControlVariate:
    def __init__(self, game: QuantizationGame, policy_value: Callable[[Policy], float], *,
                 policy_values: Callable[[list[Policy]], list[float]] | None = None) -> None:
        """``policy_values``: the table's policies as one batch (default: ``policy_value``
        one by one)."""
        if game.semantics != "hard":
            raise ValueError("the separable control variate needs hard semantics")
        self.game = game
        self.sides = list(game.sides().values())
        if max(len(side) for side in self.sides) > MAX_SIDE_PLAYERS:
            raise ValueError(f"a unit side has more than {MAX_SIDE_PLAYERS} players")
        table = [game.realize([])] + [game.realize([i]) for i in range(len(game.players))]
        scores = (policy_values or (lambda ps: [policy_value(p) for p in ps]))(table)
        self.single = np.array(scores[1:]) - scores[0]
        """h(player): the metric change of that player alone."""
        self._side_of = {i: k for k, side in enumerate(self.sides) for i in side}

    def value(self, present: Sequence[int], alpha: np.ndarray | None) -> float:
        chosen: dict[int, list[int]] = {}
        for i in present:
            chosen.setdefault(self._side_of[i], []).append(i)
        return float(sum(self.single[self.game.winner(players, alpha)]
                         for players in chosen.values()))

    def shapley(self, alpha: np.ndarray | None) -> np.ndarray:
        """Exact Shapley values of g, side by side."""
        phi = np.zeros(len(self.game.players))
        for side in self.sides:
            def side_value(subset: Sequence[int], side: list[int] = side) -> float:
                if not subset:
                    return 0.0
                return float(self.single[self.game.winner([side[k] for k in subset], alpha)])
            phi[side] = exact_shapley(len(side), side_value)
        return phi


def owen_with_control_variate(variate: SeparableControlVariate, value: ValueFunction, *,
                              samples: int, rng: np.random.Generator,
                              alpha: np.ndarray | None = None,
                              progress: Progress | None = None,
                              values: BatchValueFunction | None = None) -> ShapleyEstimate:
    """phi(V) = phi(g) exactly + Owen's estimate of phi(V - g) (its standard errors)."""
    def residual(present: Sequence[int]) -> float:
        return value(present) - variate.value(present, alpha)

    def residuals(coalitions: list[list[int]]) -> list[float]:
        assert values is not None
        return [v - variate.value(c, alpha)
                for v, c in zip(values(coalitions), coalitions, strict=True)]

    sampled = owen_shapley(len(variate.game.players), residual, samples=samples, rng=rng,
                           progress=progress, values=residuals if values else None)
    return dataclasses.replace(sampled, phi=sampled.phi + variate.shapley(alpha))
