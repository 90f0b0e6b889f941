"""A layer-separable control variate for Shapley estimation (ALGORITHMS.md).

g(S) = sum over unit sides of h(the player S realizes on that side, or none), measured one
side at a time around an anchor:

- ``floor``: h(p) = V(only p present) - V(empty), h(none) = 0: each unit side raised alone,
  everything else absent (the paper's game: at the reference precision);
- ``ceiling``: h(p) = V(every other side full, this side realizing p) - V(all present), and
  h(none) likewise with this side empty: each unit side lowered alone from the full window,
  AIMET AMP's phase-1 measurement (clean, from a network that still works).

Under hard semantics a coalition's choice on one unit side depends only on that side's
present players, so g is a sum of independent small games, and its exact values come from
enumerating each side's players (at most a few dozen coalitions each). Sampling V - g instead
of V removes the part of every marginal contribution that the single-side measurements
already explain; phi(V) = phi(g) + phi(V - g) by linearity. The values are Owen's over a q-band
(the Shapley value over the full band), the same band for g exactly and for V - g sampled.

The table costs one evaluation per player and one for the anchor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.shapley import (
    FULL_BAND,
    BatchValueFunction,
    Progress,
    QBand,
    ShapleyEstimate,
    ValueFunction,
    band_semivalue,
    owen_shapley,
)

MAX_SIDE_PLAYERS = 16  # exact enumeration of one side: 2^16 coalitions at most
ANCHORS = ("floor", "ceiling")


class SeparableControlVariate:
    def __init__(self, game: QuantizationGame, policy_value: Callable[[Policy], float], *,
                 policy_values: Callable[[list[Policy]], list[float]] | None = None,
                 anchor: str = "floor", alpha: np.ndarray | None = None) -> None:
        """``policy_values``: the table's policies as one batch (default: ``policy_value``
        one by one). ``alpha`` breaks ties between present players of a ceiling's sides."""
        if game.semantics != "hard":
            raise ValueError("the separable control variate needs hard semantics")
        if anchor not in ANCHORS:
            raise ValueError(f"unknown anchor {anchor!r}; use one of {', '.join(ANCHORS)}")
        self.game = game
        self.sides = list(game.sides().values())
        if max(len(side) for side in self.sides) > MAX_SIDE_PLAYERS:
            raise ValueError(f"a unit side has more than {MAX_SIDE_PLAYERS} players")
        n = len(game.players)
        if anchor == "floor":
            table = [game.realize([])] + [game.realize([i]) for i in range(n)]
        else:
            everyone = set(range(n))
            table = [game.realize(everyone, alpha)]
            for side in self.sides:
                others = everyone - set(side)
                table += [game.realize(others | {i}, alpha) for i in side]
                table.append(game.realize(others, alpha))
        scores = (policy_values or (lambda ps: [policy_value(p) for p in ps]))(table)
        anchor_score = scores[0]
        self.single = np.zeros(n)
        """h(player): the metric change of that side realizing that player."""
        self.empty = np.zeros(len(self.sides))
        """h(none) per side: 0 for the floor anchor."""
        if anchor == "floor":
            self.single = np.array(scores[1:]) - anchor_score
        else:
            at = 1
            for k, side in enumerate(self.sides):
                self.single[side] = np.array(scores[at:at + len(side)]) - anchor_score
                self.empty[k] = scores[at + len(side)] - anchor_score
                at += len(side) + 1
        self._side_of = {i: k for k, side in enumerate(self.sides) for i in side}

    def value(self, present: Sequence[int], alpha: np.ndarray | None) -> float:
        chosen: dict[int, list[int]] = {}
        for i in present:
            chosen.setdefault(self._side_of[i], []).append(i)
        return float(sum(self.single[self.game.winner(chosen[k], alpha)] if k in chosen
                         else self.empty[k] for k in range(len(self.sides))))

    def shapley(self, alpha: np.ndarray | None, band: QBand = FULL_BAND) -> np.ndarray:
        """Exact values of g over ``band`` (Shapley values for the full band), side by
        side."""
        phi = np.zeros(len(self.game.players))
        for k, side in enumerate(self.sides):
            def side_value(subset: Sequence[int], side: list[int] = side, k: int = k) -> float:
                if not subset:
                    return float(self.empty[k])
                return float(self.single[self.game.winner([side[j] for j in subset], alpha)])
            phi[side] = band_semivalue(len(side), side_value, band)
        return phi


def owen_with_control_variate(variate: SeparableControlVariate, value: ValueFunction, *,
                              samples: int, rng: np.random.Generator,
                              alpha: np.ndarray | None = None,
                              progress: Progress | None = None,
                              values: BatchValueFunction | None = None,
                              band: QBand = FULL_BAND, paired: bool = True) -> ShapleyEstimate:
    """phi(V) = phi(g) exactly + Owen's estimate of phi(V - g) (its standard errors); with
    no samples, phi(g) alone (unknown errors)."""
    exact = variate.shapley(alpha, band)
    if samples <= 0:
        return ShapleyEstimate(exact, np.full(len(exact), np.inf), 0)

    def residual(present: Sequence[int]) -> float:
        return value(present) - variate.value(present, alpha)

    def residuals(coalitions: list[list[int]]) -> list[float]:
        assert values is not None
        return [v - variate.value(c, alpha)
                for v, c in zip(values(coalitions), coalitions, strict=True)]

    sampled = owen_shapley(len(variate.game.players), residual, samples=samples, rng=rng,
                           progress=progress, values=residuals if values else None,
                           band=band, paired=paired)
    return dataclasses.replace(sampled, phi=sampled.phi + exact)
