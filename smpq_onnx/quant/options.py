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


Shares = tuple[tuple[int, float], ...]
"""(bits, probability) pairs, sorted by bits, probabilities summing to 1."""


@dataclass(frozen=True, order=True)
class Mixture(Option):
    """A soft choice among bit-widths: the SMPQ paper's "mix" coalition semantics (Eq. 1/3).

    The layer computes with sum_b p_b Q_b(W) as weights and sum_b p_b Q_b(x) as input. Only
    the fake-quant engine evaluates mixtures; they are never emitted. ``w_bits``/``a_bits`` are
    the most probable widths (what a cost model reads).
    """

    w_shares: Shares = ()
    a_shares: Shares = ()

    @classmethod
    def of(cls, w: dict[int, float], a: dict[int, float]) -> Option:
        """The mixture of ``w`` and ``a`` shares (normalized), or a plain Option if both are
        single widths. Probabilities are rounded to 1e-9 so equal mixtures hash equal."""
        w_shares, a_shares = _normalized(w), _normalized(a)
        if len(w_shares) == 1 and len(a_shares) == 1:
            return Option(w_shares[0][0], a_shares[0][0])
        return cls(_most_likely(w_shares), _most_likely(a_shares), w_shares, a_shares)

    def __str__(self) -> str:
        def side(shares: Shares) -> str:
            return "{" + ",".join(f"{b}:{p:.3f}" for b, p in shares) + "}"
        return f"W{side(self.w_shares)}A{side(self.a_shares)}"


def shares_of(option: Option, side: str) -> Shares:
    """The (bits, probability) pairs of one side ("w" or "a") of any option."""
    if isinstance(option, Mixture):
        return option.w_shares if side == "w" else option.a_shares
    return ((option.w_bits if side == "w" else option.a_bits, 1.0),)


def _normalized(shares: dict[int, float]) -> Shares:
    total = sum(shares.values())
    return tuple(sorted((bits, round(p / total, 9)) for bits, p in shares.items() if p > 0))


def _most_likely(shares: Shares) -> int:
    return max(shares, key=lambda item: (item[1], item[0]))[0]
