"""Layers the user fixes before the search: ``--pin PATTERN=OPTION`` and ``--keep-first-last``.

A pin names layers by a glob on their names (``fnmatch``, case-sensitive) and an option the
profile allows for them (``FP32`` where it allows float). ``--keep-first-last`` pins the first
and last quantizable layers (model order) at their highest integer option, as published
low-bit results do; explicit pins are applied after it, later pins over earlier ones. A pin
covers the whole quantizer group of a layer it matches (the group's layers share one option;
the group takes the last pin that reached it).
Pinned units are not players of the game (:class:`~smpq_onnx.strategy.game.QuantizationGame`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from smpq_onnx.errors import PolicyError
from smpq_onnx.quant.options import Option
from smpq_onnx.strategy.space import SearchSpace


def highest_integer_option(options: Sequence[Option]) -> Option | None:
    """The quantized option of most bits (w·a, then activation bits)."""
    integer = [o for o in options if not o.is_float]
    return max(integer, key=lambda o: (o.w_bits * o.a_bits, o.a_bits)) if integer else None


def resolve_pins(space: SearchSpace, pins: Sequence[str] = (), *,
                 keep_first_last: bool = False) -> dict[str, Option]:
    """Layer -> pinned option, for every layer of every pinned quantizer group."""
    assignments: list[tuple[str, Option, str]] = []  # (layer, option, source), in order
    names = [layer.name for layer in space.layers]
    if keep_first_last and names:
        for name in dict.fromkeys((names[0], names[-1])):
            option = highest_integer_option(space.options[name])
            if option is not None:
                assignments.append((name, option, "--keep-first-last"))
    for text in pins:
        pattern, option = _parse_pin(text)
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise PolicyError(f"--pin {text!r} matches no layer; see `smpq-onnx profile MODEL` "
                              "for layer names (the pattern is a glob, e.g. 'conv*=W8A8')")
        assignments += [(name, option, f"--pin {text}") for name in matched]
    pinned: dict[str, Option] = {}
    for name, option, source in assignments:  # later assignments win, group by group
        for member in space.group_of(name).layers:
            if option not in space.options[member]:
                allowed = ", ".join(str(o) for o in space.options[member])
                raise PolicyError(f"{source}: {option} is not allowed for layer {member} by "
                                  f"the profile (allowed: {allowed})")
            pinned[member] = option
    return pinned


def _parse_pin(text: str) -> tuple[str, Option]:
    pattern, sep, option = text.rpartition("=")
    if not sep or not pattern.strip() or not option.strip():
        raise PolicyError(f"cannot read --pin {text!r}; write PATTERN=OPTION, e.g. "
                          "'features.0*=W8A8' or 'classifier*=FP32'")
    return pattern.strip(), Option.parse(option)
