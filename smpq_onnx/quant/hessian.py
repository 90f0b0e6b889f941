"""Streaming second moments of a layer's FP32 inputs, the data the rounding methods need.

For a layer in canonical form (``W: [groups, out_per_group, d]``, see :mod:`.rounding`) the
input vectors ``x`` of group ``g`` are im2col patches (Conv) or rows (Gemm/MatMul), and::

    H[g]  = E[x x^T]   float64 [groups, d, d]
    mu[g] = E[x]       float64 [groups, d]

so ``E[(w_hat . x - w . x)^2] = (w_hat - w) H[g] (w_hat - w)^T`` for every output channel.

A Conv patch is flattened in the order of ``weight[o].reshape(-1)``, i.e.
``(cin_in_group, k1, k2, ...)``, with ONNX padding (zeros), strides, dilations and groups, so
``W[g] @ patch`` is exactly the convolution output. Sums are accumulated in float64 in chunks
whose temporaries stay under ``chunk_bytes`` (64 MiB by default), whatever the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from smpq_onnx.errors import DataError

DEFAULT_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ConvSpec:
    """Geometry of an ONNX Conv (explicit pads: ``[x1_begin, x2_begin, ..., x1_end, ...]``)."""

    channels_in: int
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int

    @classmethod
    def make(cls, channels_in: int, kernel_shape: Sequence[int], *,
             strides: Sequence[int] | None = None, pads: Sequence[int] | None = None,
             dilations: Sequence[int] | None = None, group: int = 1) -> ConvSpec:
        k = tuple(int(v) for v in kernel_shape)
        nd = len(k)
        spec = cls(
            channels_in=int(channels_in),
            kernel_shape=k,
            strides=tuple(int(v) for v in strides) if strides is not None else (1,) * nd,
            pads=tuple(int(v) for v in pads) if pads is not None else (0,) * (2 * nd),
            dilations=tuple(int(v) for v in dilations) if dilations is not None else (1,) * nd,
            group=int(group),
        )
        if nd < 1 or min(k) < 1:
            raise ValueError(f"kernel_shape must be non-empty and positive, got {k}")
        if len(spec.strides) != nd or len(spec.dilations) != nd or len(spec.pads) != 2 * nd:
            raise ValueError(f"strides/dilations need {nd} values and pads {2 * nd}, got "
                             f"{spec.strides}, {spec.dilations}, {spec.pads}")
        if min(spec.strides) < 1 or min(spec.dilations) < 1 or min(spec.pads) < 0:
            raise ValueError("strides and dilations must be >= 1 and pads >= 0")
        if spec.group < 1 or spec.channels_in % spec.group:
            raise ValueError(f"group {spec.group} does not divide {spec.channels_in} channels")
        return spec

    @property
    def dim(self) -> int:
        """Length of one patch: ``channels_in / group * prod(kernel_shape)``."""
        return self.channels_in // self.group * math.prod(self.kernel_shape)

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        nd = len(self.kernel_shape)
        out = []
        for i in range(nd):
            ext = (self.kernel_shape[i] - 1) * self.dilations[i] + 1
            padded = spatial[i] + self.pads[i] + self.pads[nd + i]
            out.append((padded - ext) // self.strides[i] + 1)
        return tuple(out)


def _conv_patch_chunks(x: NDArray[np.floating], spec: ConvSpec,
                       chunk_bytes: int) -> Iterator[NDArray[np.float64]]:
    """Yield float64 patches ``[group, P_chunk, d]``, in (image, *output position) order."""
    nd = len(spec.kernel_shape)
    if x.ndim != nd + 2 or x.shape[1] != spec.channels_in:
        raise DataError(f"Conv input has shape {x.shape}, expected [N, {spec.channels_in}, "
                        f"{nd} spatial dims]; feed the layer's own input tensor")
    n_img, spatial = x.shape[0], x.shape[2:]
    out = spec.output_shape(spatial)
    if min(out) < 1:
        raise DataError(f"Conv input spatial size {spatial} is smaller than the kernel "
                        f"{spec.kernel_shape}; give inputs of the model's input size")
    g, cg, k = spec.group, spec.channels_in // spec.group, spec.kernel_shape
    ext = tuple((k[i] - 1) * spec.dilations[i] + 1 for i in range(nd))
    row_bytes = g * math.prod(out[1:]) * spec.dim * 8
    img_bytes = max(row_bytes * out[0],
                    spec.channels_in * math.prod(s + spec.pads[i] + spec.pads[nd + i]
                                                 for i, s in enumerate(spatial)) * 4)
    imgs = max(1, chunk_bytes // img_bytes)
    rows = out[0] if imgs > 1 else max(1, min(out[0], chunk_bytes // row_bytes))
    pad_width = [(0, 0), (0, 0), *((spec.pads[i], spec.pads[nd + i]) for i in range(nd))]
    for n0 in range(0, n_img, imgs):
        xi = x[n0:n0 + imgs]
        if any(spec.pads):
            xi = np.pad(xi, pad_width)
        win = sliding_window_view(xi, ext, axis=tuple(range(2, nd + 2)))
        win = win[(slice(None), slice(None), *(slice(None, None, s) for s in spec.strides),
                   *(slice(None, None, dl) for dl in spec.dilations))]
        nb = win.shape[0]
        # [n, C, *out, *k] -> [g, n, *out, cg, *k]; split of C is a view, transpose too.
        win = win.reshape(nb, g, cg, *out, *k)
        win = win.transpose(1, 0, *range(3, nd + 3), 2, *range(nd + 3, 2 * nd + 3))
        for r0 in range(0, out[0], rows):
            part = win[:, :, r0:r0 + rows]
            dst = np.empty(part.shape, dtype=np.float64)
            dst[...] = part
            yield dst.reshape(g, -1, spec.dim)


def im2col(x: ArrayLike, kernel_shape: Sequence[int], *, strides: Sequence[int] | None = None,
           pads: Sequence[int] | None = None, dilations: Sequence[int] | None = None,
           group: int = 1) -> NDArray[np.float64]:
    """All patches of ``x [N, C, *spatial]`` as float64 ``[group, N * prod(out), d]``.

    Rows are ordered (image, *output position) row-major, so for canonical weights
    ``(W[g] @ patches[g].T).reshape(out_per_group, N, *out)`` is the Conv output of group g.
    Materialises everything: meant for small inputs and tests (``InputMoments`` streams).
    """
    arr = np.asarray(x)
    spec = ConvSpec.make(arr.shape[1] if arr.ndim > 1 else 0, kernel_shape, strides=strides,
                         pads=pads, dilations=dilations, group=group)
    chunks = list(_conv_patch_chunks(arr, spec, DEFAULT_CHUNK_BYTES))
    return np.concatenate(chunks, axis=1)


class InputMoments:
    """Streaming ``E[x x^T]`` and ``E[x]`` of one layer's input vectors, per weight group.

    Memory is ``O(groups * d^2)`` plus one chunk of at most ``chunk_bytes``; the result does
    not depend on how the data is split into batches (up to float64 summation order).
    """

    def __init__(self, groups: int, dim: int, *, conv: ConvSpec | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if groups < 1 or dim < 1:
            raise ValueError(f"groups and dim must be positive, got {groups}, {dim}")
        self.groups = groups
        self.dim = dim
        self.conv = conv
        self.chunk_bytes = max(1, int(chunk_bytes))
        self.count = 0
        self._sum_xx = np.zeros((groups, dim, dim), dtype=np.float64)
        self._sum_x = np.zeros((groups, dim), dtype=np.float64)

    @classmethod
    def for_conv(cls, channels_in: int, kernel_shape: Sequence[int], *,
                 strides: Sequence[int] | None = None, pads: Sequence[int] | None = None,
                 dilations: Sequence[int] | None = None, group: int = 1,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> InputMoments:
        """Moments of a Conv's NCHW input (1-D, 2-D, 3-D, ...); pads must be explicit."""
        spec = ConvSpec.make(channels_in, kernel_shape, strides=strides, pads=pads,
                             dilations=dilations, group=group)
        return cls(spec.group, spec.dim, conv=spec, chunk_bytes=chunk_bytes)

    @classmethod
    def for_dense(cls, features: int, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
                  ) -> InputMoments:
        """Moments of a Gemm/MatMul input ``x [..., features]`` (leading axes are samples)."""
        return cls(1, features, chunk_bytes=chunk_bytes)

    def _chunks(self, x: NDArray[np.floating]) -> Iterator[NDArray[np.float64]]:
        if self.conv is not None:
            yield from _conv_patch_chunks(x, self.conv, self.chunk_bytes)
            return
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise DataError(f"dense layer input has shape {x.shape}, expected [..., {self.dim}];"
                            " feed the layer's own input tensor")
        rows = x.reshape(-1, self.dim)
        step = max(1, self.chunk_bytes // (self.dim * 8))
        for r0 in range(0, rows.shape[0], step):
            yield rows[r0:r0 + step].astype(np.float64)[None]

    def update(self, x: ArrayLike) -> None:
        """Add one batch of FP32 layer inputs (Conv: ``[N, C, *spatial]``; dense: ``[..., F]``)."""
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32)
        for chunk in self._chunks(arr):
            self._sum_xx += np.matmul(chunk.transpose(0, 2, 1), chunk)
            self._sum_x += chunk.sum(axis=1)
            self.count += chunk.shape[1]

    def _check(self) -> None:
        if self.count == 0:
            raise DataError("no calibration samples reached this layer; give calibration data "
                            "(e.g. --data) before computing input statistics")

    def hessian(self) -> NDArray[np.float64]:
        """``E[x x^T]``, float64 ``[groups, d, d]`` (symmetric, positive semi-definite)."""
        self._check()
        h = self._sum_xx / self.count
        return np.asarray((h + h.transpose(0, 2, 1)) * 0.5)

    def mean(self) -> NDArray[np.float64]:
        """``E[x]``, float64 ``[groups, d]``."""
        self._check()
        return self._sum_x / self.count
