"""Command-line options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from smpq_onnx.errors import PolicyError
from smpq_onnx.options import Option
from smpq_onnx.policy import Policy, read_policy
from smpq_onnx.runtime import RuntimeConfig
from smpq_onnx.space import SearchSpace

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


def runtime_config(provider: str, threads: int, optimization: str = "all") -> RuntimeConfig:
    return RuntimeConfig(provider=provider, threads=threads,  # type: ignore[arg-type]
                         optimization=optimization)  # type: ignore[arg-type]


def resolve_policy(space: SearchSpace, *, bits: str | None, policy_path: Path | None,
                   default_bits: str | None, fallback: str) -> Policy:
    """The policy given by --bits or --policy (with --default-bits), else ``fallback``."""
    if bits and policy_path:
        raise click.UsageError("give --bits or --policy, not both")
    if policy_path is not None:
        default = Option.parse(default_bits) if default_bits else None
        names = [layer.name for layer in space.layers]
        return space.validate(read_policy(policy_path, default=default, layer_names=names))
    if default_bits:
        raise PolicyError("--default-bits only completes a --policy file")
    return space.uniform(Option.parse(bits or fallback))
