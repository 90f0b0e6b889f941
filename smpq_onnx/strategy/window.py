"""One-step windows around a policy: per unit, the widths next to its current ones.

The budget-local game plays each window (absent players at its floor); the joint polish and
the sensitivity start measure the cells of a unit's window one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from smpq_onnx.quant.options import Option
from smpq_onnx.strategy.game import QuantizationGame, Unit


def window_around(game: QuantizationGame, center: Sequence[Option], radius: int = 1
                  ) -> tuple[list[Option], list[list[Option]]]:
    """Per unit, the floor (``radius`` steps below ``center`` per side) and the window's
    options (up to ``radius`` steps either side)."""
    floors, windows = [], []
    for unit, middle in zip(game.units, center, strict=True):
        floor, legal = unit_window(game, unit, middle, radius)
        floors.append(floor)
        windows.append(legal)
    return floors, windows


def unit_window(game: QuantizationGame, unit: Unit, middle: Option, radius: int = 1
                ) -> tuple[Option, list[Option]]:
    """One unit's floor and window options around ``middle`` (:func:`window_around`)."""
    if unit.pinned:
        return middle, [middle]
    if game.split_sides:
        w = _steps(sorted({o.w_bits for o in unit.options}), middle.w_bits, radius)
        a = _steps(sorted({o.a_bits for o in unit.options}), middle.a_bits, radius)
        return Option(w[0], a[0]), [o for o in unit.options if o.w_bits in w and o.a_bits in a]
    ranked = sorted(unit.options, key=lambda o: (o.w_bits * o.a_bits, o.a_bits, o.w_bits))
    legal = _steps(ranked, middle, radius)
    return legal[0], legal


Step = TypeVar("Step")


def _steps(ordered: list[Step], middle: Step, radius: int) -> list[Step]:
    i = ordered.index(middle)
    return ordered[max(i - radius, 0):i + radius + 1]
