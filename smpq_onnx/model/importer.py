"""ONNX -> (onnx-ir model, networkx view, static shapes, quantizable layers).

The import pipeline is declared as data (``IMPORT_PASSES``) and run by onnx-ir's PassManager.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import onnx
import onnx_ir as ir
from onnx_ir.passes import common as ir_passes

from smpq_onnx.errors import UnsupportedModelError
from smpq_onnx.model.dataflow import Dataflow, build_dataflow
from smpq_onnx.model.graph_view import build_graph_view, execution_order
from smpq_onnx.model.layers import QuantizableLayer, find_layers, subgraph_layers
from smpq_onnx.model.loading import load_onnx, supported_model
from smpq_onnx.model.precision import Float16Interface, to_float32
from smpq_onnx.model.shapes import (
    Shape,
    fix_input_shapes,
    infer_static_shapes,
    model_batch_axes,
)
from smpq_onnx.passes.constant_identity import ConstantIdentityEliminationPass
from smpq_onnx.passes.fold_batchnorm import FoldBatchNormPass
from smpq_onnx.passes.fold_constant_of_shape import FoldConstantOfShapePass
from smpq_onnx.passes.fold_constant_transpose import FoldConstantTransposePass

logger = logging.getLogger(__name__)

SHOWN_SUBGRAPH_LAYERS = 5


def import_passes() -> list[ir.passes.PassBase]:
    """The canonicalization applied to every model before analysis, in order."""
    return [
        # IR < 4 models list initializers as graph inputs too: they are constants here.
        ir_passes.RemoveInitializersFromInputsPass(),
        # Weights held in Constant nodes become initializers (size_limit=0: every tensor).
        ir_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=0),
        ConstantIdentityEliminationPass(),
        FoldConstantOfShapePass(),
        FoldConstantTransposePass(),
        FoldBatchNormPass(),
        ir_passes.RemoveUnusedNodesPass(),
        # Empty and duplicate node names (ORT refuses duplicates) become unique.
        ir_passes.NameFixPass(),
    ]


@dataclass(frozen=True)
class ImportedModel:
    """An FP32 model ready for analysis and rewriting."""

    ir_model: ir.Model
    view: nx.MultiDiGraph
    flow: Dataflow
    schedule: tuple[str, ...]
    shapes: dict[str, Shape]
    layers: tuple[QuantizableLayer, ...]
    source: str
    float_subgraph_layers: tuple[str, ...] = ()
    """Layer-type nodes inside If/Loop/Scan bodies, carried through in float (``name (op)``)."""
    float16: Float16Interface = field(default_factory=Float16Interface)
    """What was float16 in the source model (converted to float32 here)."""

    def layer(self, name: str) -> QuantizableLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def owns_bias(self, layer: QuantizableLayer) -> bool:
        """Whether ``layer`` alone reads its bias (only then is the bias quantized to int32)."""
        if layer.bias is None:
            return False
        value = self.ir_model.graph.initializers.get(layer.bias)
        return value is not None and len(value.uses()) == 1

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def widest_activation(self) -> int:
        """Elements of the largest tensor a node of the main graph produces, at the shapes the
        costs are for (batch 1); 0 when no shape is known."""
        sizes = [math.prod(self.shapes[name]) for node in self.ir_model.graph
                 for name in (value.name for value in node.outputs if value is not None)
                 if name in self.shapes]
        return max(sizes, default=0)

    @property
    def input_shapes(self) -> dict[str, Shape]:
        """Graph input -> the shape at batch 1 that every cost (MACs, BOPs, SRAM) is for."""
        return {value.name or "": self.shapes[value.name or ""]
                for value in self.ir_model.graph.inputs if (value.name or "") in self.shapes}

    @property
    def batch_axes(self) -> dict[str, int | None]:
        """Graph input -> the axis holding its samples, None for an input without a batch
        (:func:`smpq_onnx.model.shapes.batch_axes`)."""
        return model_batch_axes(self.ir_model)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's inputs fix on their batch axis (e.g. 1 for
        ``[1, 3, 224, 224]``), or None when the batch is symbolic: such models are run that
        many samples at a time (one input with a fixed batch is enough: a larger batch would
        not fit it)."""
        axes = self.batch_axes
        for value in self.ir_model.graph.inputs:
            axis = axes.get(value.name or "")
            dim = tuple(value.shape or ())[axis] if axis is not None else None
            if isinstance(dim, int) and dim > 0:
                return dim
        return None


def import_model(source: str | Path | onnx.ModelProto, *, batch_size: int = 1,
                 input_shapes: Mapping[str, Sequence[int]] | None = None,
                 label: str | None = None) -> ImportedModel:
    """Load (if a path), canonicalize and analyse an FP32 ONNX model.

    ``input_shapes`` (input -> full shape, batch written as 1) fixes symbolic dimensions other
    than the batch (e.g. image height and width); the batch stays symbolic. ``label`` names a
    ModelProto source in messages (a path names itself).
    """
    if isinstance(source, onnx.ModelProto):
        label = label or "model"
        proto = supported_model(source, source=label)
    else:
        label = label or str(source)
        proto = load_onnx(source)
    proto, float16 = to_float32(proto)
    if float16.any:
        logger.info("%s is a float16 model: analysed and simulated in float32 (exact for its "
                    "weights and data); the emitted model keeps its float16 inputs and "
                    "outputs", label)
    model = ir.from_proto(proto)
    ir.passes.PassManager(import_passes())(model)
    if input_shapes:
        fix_input_shapes(model, input_shapes)

    shapes = infer_static_shapes(model, batch_size=batch_size)
    layers = find_layers(model, shapes)
    inner = subgraph_layers(model)
    if not layers:
        where = (f" outside If/Loop/Scan bodies ({len(inner)} inside, which smpq-onnx leaves "
                 "in float)" if inner else "")
        raise UnsupportedModelError(
            f"{label} has no quantizable layer{where} (Conv, ConvTranspose, Gemm or MatMul "
            "with a constant FP32 weight); nothing to quantize"
        )
    if inner:
        shown = ", ".join(inner[:SHOWN_SUBGRAPH_LAYERS])
        more = f" and {len(inner) - SHOWN_SUBGRAPH_LAYERS} more" \
            if len(inner) > SHOWN_SUBGRAPH_LAYERS else ""
        logger.info("%d layer(s) inside If/Loop/Scan bodies stay in float: %s%s", len(inner),
                    shown, more)
    view = build_graph_view(model)
    flow = build_dataflow(view, [o.name or "" for o in model.graph.outputs])
    return ImportedModel(
        ir_model=model, view=view, flow=flow, schedule=execution_order(view), shapes=shapes,
        layers=layers, source=label, float_subgraph_layers=inner, float16=float16,
    )
