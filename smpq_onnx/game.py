"""The SMPQ cooperative game on a frozen model (ALGORITHMS.md).

Units are quantizer groups: every layer of a unit takes the same option, so every coalition
is a deployable policy. Players are (unit, option) pairs; where the profile allows every
(W, A) combination they are split per side, (unit, "w", bits) and (unit, "a", bits), so a
unit with 7 weight and 7 activation widths has 14 players instead of 49.

A coalition S maps to a policy: a unit with no present player stays at the reference
precision (FP32); with present players it takes, per side, the present player of largest
alpha ("hard" semantics; ties go to the higher bit-width). Only the realized policy is
evaluated, and the evaluator memoizes it, so many permutation steps cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from smpq_onnx.options import FLOAT_BITS, Option
from smpq_onnx.policy import Policy
from smpq_onnx.space import SearchSpace


@dataclass(frozen=True, order=True)
class Player:
    unit: int
    side: str
    """"w" or "a" (a bit-width of one side), or "wa" (a joint (W, A) option)."""
    w_bits: int
    a_bits: int

    def label(self, unit_names: Sequence[str]) -> str:
        kind = {"w": f"W{self.w_bits}", "a": f"A{self.a_bits}",
                "wa": f"W{self.w_bits}A{self.a_bits}"}[self.side]
        return f"{unit_names[self.unit]}:{kind}"


@dataclass(frozen=True)
class Unit:
    name: str
    layers: tuple[str, ...]
    options: tuple[Option, ...]
    """Quantized options legal for every layer of the unit."""


class QuantizationGame:
    def __init__(self, space: SearchSpace, *, split_sides: bool | None = None) -> None:
        self.space = space
        units = []
        for group in space.groups:
            common = set(space.options[group.layers[0]])
            for name in group.layers[1:]:
                common &= set(space.options[name])
            options = tuple(sorted(o for o in common if not o.is_float))
            units.append(Unit(group.name, group.layers, options))
        self.units = tuple(units)
        full_grid = all(
            {(o.w_bits, o.a_bits) for o in u.options}
            == {(w, a) for w in {o.w_bits for o in u.options} for a in {o.a_bits
                                                                       for o in u.options}}
            for u in units)
        self.split_sides = full_grid if split_sides is None else split_sides
        players: list[Player] = []
        for index, unit in enumerate(self.units):
            if self.split_sides:
                players += [Player(index, "w", w, FLOAT_BITS)
                            for w in sorted({o.w_bits for o in unit.options})]
                players += [Player(index, "a", FLOAT_BITS, a)
                            for a in sorted({o.a_bits for o in unit.options})]
            else:
                players += [Player(index, "wa", o.w_bits, o.a_bits) for o in unit.options]
        self.players = tuple(players)
        self.unit_names = [u.name for u in self.units]

    def realize(self, present: Iterable[int], alpha: np.ndarray | None = None) -> Policy:
        """The policy of the coalition given by player indices (hard semantics)."""
        best: dict[tuple[int, str], tuple[float, int, int]] = {}
        for index in present:
            player = self.players[index]
            priority = float(alpha[index]) if alpha is not None else 0.0
            bits = player.w_bits if player.side == "w" else player.a_bits
            if player.side == "wa":
                bits = player.w_bits * 100 + player.a_bits
            key = (player.unit, player.side)
            candidate = (priority, bits, index)
            if key not in best or candidate > best[key]:
                best[key] = candidate
        chosen: dict[str, Option] = {}
        for unit_index, unit in enumerate(self.units):
            if self.split_sides:
                w = best.get((unit_index, "w"))
                a = best.get((unit_index, "a"))
                option = Option(self.players[w[2]].w_bits if w else FLOAT_BITS,
                                self.players[a[2]].a_bits if a else FLOAT_BITS)
            else:
                joint = best.get((unit_index, "wa"))
                option = (Option(self.players[joint[2]].w_bits, self.players[joint[2]].a_bits)
                          if joint else Option(FLOAT_BITS, FLOAT_BITS))
            for layer in unit.layers:
                chosen[layer] = option
        return Policy(chosen)

    def unit_utilities(self, phi: np.ndarray) -> list[dict[Option, float]]:
        """Utility of each legal option of each unit: the sum of its players' values."""
        lookup = {p: i for i, p in enumerate(self.players)}
        tables = []
        for unit_index, unit in enumerate(self.units):
            table = {}
            for option in unit.options:
                if self.split_sides:
                    w = lookup[Player(unit_index, "w", option.w_bits, FLOAT_BITS)]
                    a = lookup[Player(unit_index, "a", FLOAT_BITS, option.a_bits)]
                    table[option] = float(phi[w] + phi[a])
                else:
                    table[option] = float(phi[lookup[Player(unit_index, "wa", option.w_bits,
                                                            option.a_bits)]])
            tables.append(table)
        return tables
