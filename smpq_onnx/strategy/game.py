"""The SMPQ cooperative game on a frozen model (ALGORITHMS.md).

Units are quantizer groups: every layer of a unit takes the same option, so every coalition
is a deployable policy. Players are (unit, option) pairs; where the profile allows every
(W, A) combination they are split per side, (unit, "w", bits) and (unit, "a", bits), so a
unit with 7 weight and 7 activation widths has 14 players instead of 49.

A coalition S maps to a policy: a unit with no present player stays at the reference
precision (FP32 unless chosen otherwise); with present players it takes, per side,

- ``hard`` (default): the present player of largest alpha (ties go to the higher bit-width),
  so every coalition is a deployable policy and many permutation steps change nothing;
- ``mix`` (the paper's Eq. 1/3): a :class:`~smpq_onnx.quant.options.Mixture` of the present
  widths weighted by softmax(alpha) over the present players only (renormalized, so weights
  keep their scale when no BatchNorm follows); joint (W, A) players mix each side with the
  summed shares of the players that carry its width.

Only the realized policy is evaluated, and the evaluator memoizes it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from smpq_onnx.errors import PolicyError
from smpq_onnx.quant.options import FLOAT_BITS, FP32, Mixture, Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.space import SearchSpace


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
    """Quantized options legal for every layer of the unit; a pinned unit's one option."""
    pinned: bool = False
    """Fixed by the user (``--pin``, ``--keep-first-last``): no players, every coalition and
    selection keeps its option."""


SEMANTICS = ("hard", "mix")


class QuantizationGame:
    def __init__(self, space: SearchSpace, *, split_sides: bool | None = None,
                 reference: Option = FP32, semantics: str = "hard",
                 pins: Mapping[str, Option] | None = None) -> None:
        if semantics not in SEMANTICS:
            raise ValueError(f"unknown semantics {semantics!r}; use one of {SEMANTICS}")
        if not reference.is_float:
            illegal = [name for name, legal in space.options.items() if reference not in legal]
            if illegal:
                raise PolicyError(f"reference precision {reference} is not legal for layer "
                                  f"{illegal[0]} under this profile; choose FP32 or an option "
                                  "every layer allows")
        self.space = space
        self.reference = reference
        self.semantics = semantics
        pins = dict(pins or {})
        units = []
        for group in space.groups:
            pinned = {pins[name] for name in group.layers if name in pins}
            if pinned:
                if len(pinned) > 1:
                    raise PolicyError(f"layers of quantizer group {group.name} share one "
                                      f"option but are pinned to {sorted(map(str, pinned))}")
                units.append(Unit(group.name, group.layers, tuple(pinned), pinned=True))
                continue
            common = set(space.options[group.layers[0]])
            for name in group.layers[1:]:
                common &= set(space.options[name])
            options = tuple(sorted(o for o in common if not o.is_float))
            units.append(Unit(group.name, group.layers, options))
        free = [u for u in units if not u.pinned]
        full_grid = all(
            {(o.w_bits, o.a_bits) for o in u.options}
            == {(w, a) for w in {o.w_bits for o in u.options} for a in {o.a_bits
                                                                       for o in u.options}}
            for u in free)
        self.split_sides = full_grid if split_sides is None else split_sides
        self.floors: tuple[Option, ...] | None = None
        """Per unit, its precision when no player of it is present (None: ``reference``)."""
        self._set_units(tuple(units))

    def _set_units(self, units: tuple[Unit, ...]) -> None:
        self.units = units
        players: list[Player] = []
        for index, unit in enumerate(self.units):
            if unit.pinned:
                continue
            floor = self.floors[index] if self.floors is not None else None
            if self.split_sides:
                players += [Player(index, "w", w, FLOAT_BITS)
                            for w in sorted({o.w_bits for o in unit.options})
                            if floor is None or w != floor.w_bits]
                players += [Player(index, "a", FLOAT_BITS, a)
                            for a in sorted({o.a_bits for o in unit.options})
                            if floor is None or a != floor.a_bits]
            else:
                players += [Player(index, "wa", o.w_bits, o.a_bits) for o in unit.options
                            if o != floor]
        self.players = tuple(players)
        self.unit_names = [u.name for u in self.units]

    def window(self, floors: Sequence[Option], options: Sequence[Sequence[Option]]
               ) -> QuantizationGame:
        """The game restricted to ``options[k]`` per unit, absent players meaning
        ``floors[k]`` (one of them) instead of the reference precision: a game played around
        networks near a budget (:mod:`smpq_onnx.strategy.local`). Pinned units keep their pin.
        """
        local = copy.copy(self)
        units = []
        for unit, floor, legal in zip(self.units, floors, options, strict=True):
            if unit.pinned:
                units.append(unit)
                continue
            if floor not in legal or any(o not in unit.options for o in legal):
                raise ValueError(f"window of unit {unit.name}: {floor} and {legal} must be "
                                 "legal options, the floor among them")
            units.append(dataclasses.replace(unit, options=tuple(sorted(legal))))
        local.floors = tuple(unit.options[0] if unit.pinned else floor
                             for unit, floor in zip(self.units, floors, strict=True))
        local._set_units(tuple(units))
        return local

    def realize(self, present: Iterable[int], alpha: np.ndarray | None = None) -> Policy:
        """The policy of the coalition given by player indices."""
        by_side: dict[tuple[int, str], list[int]] = {}
        for index in present:
            player = self.players[index]
            by_side.setdefault((player.unit, player.side), []).append(index)
        chosen: dict[str, Option] = {}
        for unit_index, unit in enumerate(self.units):
            floor = self.floors[unit_index] if self.floors is not None else self.reference
            reference = {"w": {(floor.w_bits, FLOAT_BITS): 1.0},
                         "a": {(FLOAT_BITS, floor.a_bits): 1.0}}
            if unit.pinned:
                option: Option = unit.options[0]
            elif self.split_sides:
                w = self._shares(by_side.get((unit_index, "w"), []), alpha) or reference["w"]
                a = self._shares(by_side.get((unit_index, "a"), []), alpha) or reference["a"]
                option = Mixture.of({b: p for (b, _), p in w.items()},
                                    {b: p for (_, b), p in a.items()})
            else:
                joint = self._shares(by_side.get((unit_index, "wa"), []), alpha)
                if not joint:
                    option = floor
                else:
                    w_shares: dict[int, float] = {}
                    a_shares: dict[int, float] = {}
                    for (w_bits, a_bits), share in joint.items():
                        w_shares[w_bits] = w_shares.get(w_bits, 0.0) + share
                        a_shares[a_bits] = a_shares.get(a_bits, 0.0) + share
                    option = Mixture.of(w_shares, a_shares)
            for layer in unit.layers:
                chosen[layer] = option
        return Policy(chosen)

    def winner(self, indices: Sequence[int], alpha: np.ndarray | None) -> int:
        """Hard semantics: of present players of one unit side, the one that is realized
        (largest alpha, then more bits, then index)."""
        def rank(i: int) -> tuple[float, int, int, int]:
            player = self.players[i]
            return (float(alpha[i]) if alpha is not None else 0.0, player.w_bits,
                    player.a_bits, i)
        return max(indices, key=rank)

    def sides(self) -> dict[tuple[int, str], list[int]]:
        """Player indices per (unit, side): the independent choices a coalition makes."""
        grouped: dict[tuple[int, str], list[int]] = {}
        for index, player in enumerate(self.players):
            grouped.setdefault((player.unit, player.side), []).append(index)
        return grouped

    def _shares(self, indices: list[int], alpha: np.ndarray | None
                ) -> dict[tuple[int, int], float]:
        """(w_bits, a_bits) of the present players of one unit side -> share of the side."""
        if not indices:
            return {}
        if self.semantics == "hard":
            best = self.players[self.winner(indices, alpha)]
            return {(best.w_bits, best.a_bits): 1.0}
        priority = np.zeros(len(indices)) if alpha is None else alpha[indices].astype(float)
        players = [self.players[i] for i in indices]
        weights = np.exp(priority - priority.max())
        weights /= weights.sum()
        return {(p.w_bits, p.a_bits): float(share)
                for p, share in zip(players, weights, strict=True)}

    def unit_utilities(self, phi: np.ndarray) -> list[dict[Option, float]]:
        """Utility of each legal option of each unit: the sum of its players' values."""
        lookup = {p: i for i, p in enumerate(self.players)}
        tables = []
        for unit_index, unit in enumerate(self.units):
            table = {}
            for option in unit.options:
                if unit.pinned:
                    table[option] = 0.0
                elif self.split_sides:  # a floor width has no player: utility 0
                    w = lookup.get(Player(unit_index, "w", option.w_bits, FLOAT_BITS))
                    a = lookup.get(Player(unit_index, "a", FLOAT_BITS, option.a_bits))
                    table[option] = sum(float(phi[i]) for i in (w, a) if i is not None)
                else:
                    joint = lookup.get(Player(unit_index, "wa", option.w_bits, option.a_bits))
                    table[option] = 0.0 if joint is None else float(phi[joint])
            tables.append(table)
        return tables
