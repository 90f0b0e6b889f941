"""An object pickled once into shared memory, so that worker processes load it without a copy
of its large arrays each.

Pickle protocol 5 hands contiguous numpy arrays out of band; their bytes go into one
``multiprocessing.shared_memory`` block, and each worker rebuilds the object around views of
that block (the evaluation data, rounded weights and FP32 outputs of a worker spec: read-only
to the evaluator). The small rest travels in the pickle. The block lives until :meth:`close`
(the driver's); if the driver is killed, multiprocessing's resource tracker removes it.
"""

from __future__ import annotations

import pickle
from multiprocessing import shared_memory
from typing import Any

_attached: list[shared_memory.SharedMemory] = []
"""Blocks this process reads objects from (kept open while the objects live)."""


class SharedPickle:
    def __init__(self, value: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []
        self.header = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        raws = [buffer.raw() for buffer in buffers]
        self.sizes = [raw.nbytes for raw in raws]
        self._block: shared_memory.SharedMemory | None = shared_memory.SharedMemory(
            create=True, size=max(1, sum(self.sizes)))
        self.name = self._block.name
        target, offset = _buffer(self._block), 0
        for raw in raws:
            target[offset:offset + raw.nbytes] = raw
            offset += raw.nbytes

    @property
    def shared_bytes(self) -> int:
        return sum(self.sizes)

    def __getstate__(self) -> dict[str, Any]:
        return {"header": self.header, "sizes": self.sizes, "name": self.name, "_block": None}

    def load(self) -> Any:
        """The object, its arrays viewing the shared block."""
        block = shared_memory.SharedMemory(name=self.name)
        _attached.append(block)
        whole, views, offset = _buffer(block), [], 0
        for size in self.sizes:
            views.append(whole[offset:offset + size])
            offset += size
        return pickle.loads(self.header, buffers=views)

    def close(self) -> None:
        block, self._block = self._block, None
        if block is not None:
            block.close()
            block.unlink()


def _buffer(block: shared_memory.SharedMemory) -> memoryview:
    buffer = block.buf
    assert buffer is not None, "shared memory block closed"
    return buffer
