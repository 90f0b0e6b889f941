"""FP32 values of chosen tensors of the model, batch by batch (one ONNX Runtime session).

Used by the passes that read activations once: calibration histograms and the rounding
stage's input moments. Graph inputs among the tensors come from the batch itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx
import onnx_ir as ir

from smpq_onnx.errors import DataError
from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.runtime import RuntimeConfig


def tensor_batches(model: ImportedModel, tensors: Iterable[str],
                   batches: Iterable[Mapping[str, np.ndarray]], *, runtime: RuntimeConfig,
                   progress: Callable[[int], None] | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Per batch, ``{tensor: value}`` for every one of ``tensors``.

    ``progress(samples seen)`` after each batch; no batch at all is a DataError.
    """
    names = sorted(set(tensors))
    proto = ir.to_proto(model.ir_model)
    outputs = {o.name for o in proto.graph.output}
    inputs = {i.name for i in proto.graph.input}
    for name in names:
        if name not in outputs and name not in inputs:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = runtime.session(proto)
    fetch = [n for n in names if n not in inputs]
    seen = 0
    for batch in batches:
        values = (dict(zip(fetch, session.run(fetch, dict(batch)), strict=True))
                  if fetch else {})
        yield {name: values[name] if name in values else batch[name] for name in names}
        seen += len(next(iter(batch.values())))
        if progress is not None:
            progress(seen)
    if seen == 0:
        raise DataError("the calibration data holds no samples; give a non-empty --calib-data")
