"""Bit-width options: the (weight bits, activation bits) pair a layer runs at.

32 bits means "left in floating point". ``FP32`` is the option with both sides at 32.
Options are written ``W4A8`` (weights 4-bit, input activations 8-bit) or ``FP32``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from smpq_onnx.errors import PolicyError

FLOAT_BITS = 32
QUANT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 16)
VALID_BITS: frozenset[int] = frozenset((*QUANT_BITS, FLOAT_BITS))

_OPTION_RE = re.compile(r"^[Ww](\d+)[Aa](\d+)$")


@dataclass(frozen=True, order=True)
class Option:
    """One precision choice for a layer: weight bits and input-activation bits."""

    w_bits: int
    a_bits: int

    def __post_init__(self) -> None:
        for side, bits in (("weight", self.w_bits), ("activation", self.a_bits)):
            if bits not in VALID_BITS:
                raise PolicyError(
                    f"{side} bit-width {bits} is not supported; use one of 2-8, 16 or 32 (float)"
                )

    @property
    def is_float(self) -> bool:
        return self.w_bits == FLOAT_BITS and self.a_bits == FLOAT_BITS

    def __str__(self) -> str:
        return "FP32" if self.is_float else f"W{self.w_bits}A{self.a_bits}"

    @classmethod
    def parse(cls, text: str) -> Option:
        """Parse ``W4A8``/``w4a8`` or ``FP32``; raise PolicyError naming the text otherwise."""
        cleaned = text.strip()
        if cleaned.upper() == "FP32":
            return FP32
        match = _OPTION_RE.match(cleaned)
        if match is None:
            raise PolicyError(
                f"cannot read bit-width option {text!r}; write it like W8A8, W4A16 or FP32"
            )
        return cls(int(match.group(1)), int(match.group(2)))


FP32 = Option(FLOAT_BITS, FLOAT_BITS)
