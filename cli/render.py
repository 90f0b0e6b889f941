"""Plain-text tables and number formatting for the terminal."""

from __future__ import annotations

from collections.abc import Sequence


def human(value: float | None, unit: str = "") -> str:
    """1234567 -> '1.23M' (bytes use binary prefixes: 'KiB', 'MiB')."""
    if value is None:
        return "-"
    value = float(value)
    if unit == "B":
        for prefix, scale in (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {prefix}"
        return f"{int(value)} B"
    if unit == "s":
        for prefix, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {prefix}"
        return f"{value * 1e9:.0f} ns"
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{prefix}{unit}"
    return f"{value:g}{unit}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *,
          right_align: Sequence[bool] | None = None) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    align = right_align or [False] * len(headers)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if a else c.ljust(w)
                         for c, w, a in zip(cells, widths, align, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
