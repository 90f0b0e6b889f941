"""Command-line options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from smpq_onnx.api.choices import parse_input_shapes
from smpq_onnx.api.context import DEFAULT_ROUNDING
from smpq_onnx.quant.weight_rounding import ROUNDING_METHODS

F = TypeVar("F", bound=Callable[..., Any])


def input_shape_option(function: F) -> F:
    """``--input-shape NAME=DIMS`` (repeatable), parsed into ``input_shapes``."""
    return click.option(
        "--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
        callback=lambda _ctx, _param, values: parse_input_shapes(values),
        help="Concrete shape of an input with symbolic sizes, the batch written as 1 (e.g. "
        "images=1x3x640x640; repeatable). Default: the shape of the data's first sample. "
        "Costs are per sample at this shape.")(function)


def policy_options(function: F) -> F:
    for decorator in reversed([
        click.option("--bits", help="One option for every layer, e.g. W8A8 or W4A16."),
        click.option("--policy", "policy_path", type=click.Path(path_type=Path),
                     help="Policy JSON file: layer -> {w_bits, a_bits}."),
        click.option("--default-bits", help="Option for layers the policy file leaves out."),
    ]):
        function = decorator(function)
    return function


def runtime_options(function: F) -> F:
    for decorator in reversed([
        click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True, help="ONNX Runtime provider."),
        click.option("--threads", type=int, default=0, show_default=True,
                     help="Intra-op threads (0: all cores)."),
        click.option("--optimization", type=click.Choice(["disable", "basic", "extended", "all"]),
                     default="all", show_default=True,
                     help="ORT graph optimization level of every evaluation; final metrics "
                     "are the emitted QDQ model's, run at this level. 'all' is fastest."),
    ]):
        function = decorator(function)
    return function


def rounding_options(function: F) -> F:
    for decorator in reversed([
        click.option("--rounding", type=click.Choice(list(ROUNDING_METHODS)),
                     default=DEFAULT_ROUNDING.method, show_default=True,
                     help="Integer weights per (layer, bits): nearest, gptq (second-order, "
                     "error feedback) or adaround (learned), chosen for the layer's output on "
                     "the calibration data; cached on disk ($SMPQ_CACHE_DIR)."),
        click.option("--bias-correction/--no-bias-correction",
                     default=DEFAULT_ROUNDING.bias_correction, show_default=True,
                     help="Fold the mean output shift of quantized weights into the bias."),
        click.option("--scale-search/--no-scale-search", default=DEFAULT_ROUNDING.scale_search,
                     show_default=True, help="Also choose each channel's clipping range for "
                     "the layer's output error (10 ranges; several times the stage's time)."),
    ]):
        function = decorator(function)
    return function
