"""A fixed-size histogram that grows its range as data arrives, without keeping the data.

Bins stay aligned when the range grows: the bin width doubles (pairs of bins merge) and the
origin moves by whole old bins, so every old bin falls into exactly one new bin and no count is
smeared. Memory is ``bins`` counts per tensor whatever the amount of data.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 2048


class StreamingHistogram:
    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.float64)
        self.lo = 0.0
        self.width = 0.0
        self.min = math.inf
        self.max = -math.inf

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    @property
    def centers(self) -> np.ndarray:
        return self.lo + (np.arange(self.bins) + 0.5) * self.width

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        vmin, vmax = float(values.min()), float(values.max())
        if self.width == 0.0:
            span = vmax - vmin
            self.width = span / self.bins if span > 0 else max(abs(vmin), 1.0) * 1e-6
            self.lo = vmin
        else:
            self._grow_to(vmin, vmax)
        self.min, self.max = min(self.min, vmin), max(self.max, vmax)
        index = np.floor((values.astype(np.float64) - self.lo) / self.width).astype(np.int64)
        np.clip(index, 0, self.bins - 1, out=index)
        self.counts += np.bincount(index, minlength=self.bins)

    def _grow_to(self, vmin: float, vmax: float) -> None:
        hi = self.lo + self.bins * self.width
        if vmin >= self.lo and vmax <= hi:
            return
        shift = math.ceil((self.lo - vmin) / self.width) if vmin < self.lo else 0
        new_lo = self.lo - shift * self.width
        factor = 1
        while new_lo + self.bins * self.width * factor < max(vmax, hi):
            factor *= 2
        old = np.arange(self.bins)
        target = (old + shift) // factor
        counts = np.zeros(self.bins, dtype=np.float64)
        np.add.at(counts, target, self.counts)
        self.counts, self.lo, self.width = counts, new_lo, self.width * factor

    def percentile_range(self, percentile: float) -> tuple[float, float]:
        """(lower, upper) values cutting off (100 - percentile)% of the mass in each tail."""
        cdf = np.cumsum(self.counts) / max(self.total, 1.0)
        tail = (100.0 - percentile) / 100.0
        lo_bin = int(np.searchsorted(cdf, tail, side="left"))
        hi_bin = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
        lo = max(self.lo + lo_bin * self.width, self.min)
        hi = min(self.lo + (hi_bin + 1) * self.width, self.max)
        return lo, hi

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts,
                "meta": np.array([self.lo, self.width, self.min, self.max], dtype=np.float64)}

    @classmethod
    def from_arrays(cls, counts: np.ndarray, meta: np.ndarray) -> StreamingHistogram:
        hist = cls(bins=len(counts))
        hist.counts = np.asarray(counts, dtype=np.float64)
        hist.lo, hist.width, hist.min, hist.max = (float(v) for v in meta)
        return hist
