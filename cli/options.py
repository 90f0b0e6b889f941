"""Command-line options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


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
