"""Bounded least-recently-used caches for segmented evaluation.

- :class:`BoundaryCache`: the activations a segment hands on, for every evaluation sample,
  keyed by (segment index, configuration of every segment up to it). Bounded in bytes.
- :class:`SessionCache`: one ONNX Runtime session per (segment, configuration of its layers),
  bounded in count (a session holds its weights and its arena).

Neither changes a result: a hit returns what recomputing would give, bit for bit (the same
session graph on the same inputs), so a policy's metric does not depend on what ran before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

V = TypeVar("V")


class BoundaryCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, list[np.ndarray]] = OrderedDict()

    def get(self, key: Hashable) -> list[np.ndarray] | None:
        arrays = self._entries.get(key)
        if arrays is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return arrays

    def touch(self, key: Hashable) -> None:
        """Mark ``key`` recently used (an ancestor of a hit: its descendants need it)."""
        if key in self._entries:
            self._entries.move_to_end(key)

    def put(self, key: Hashable, arrays: list[np.ndarray]) -> None:
        size = sum(a.nbytes for a in arrays)
        if size > self.max_bytes or key in self._entries:
            return
        while self.bytes + size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in evicted)
        self._entries[key] = arrays
        self.bytes += size

    def __len__(self) -> int:
        return len(self._entries)


class SessionCache(Generic[V]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.created = 0
        self._entries: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, create: Callable[[], V]) -> V:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
            return value
        value = create()
        self.created += 1
        if self.max_entries > 0:
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value
