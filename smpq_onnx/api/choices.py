"""Arguments shared by the operations: runtime settings and the policy to apply.

A policy is given as one option for every layer (``bits="W4A8"``), or as a policy (a
:class:`Policy`, a mapping layer -> option, or a JSON file) completed by ``default_bits``;
with neither, the profile's default option.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, get_args

from smpq_onnx.errors import InvalidArgumentError, PolicyError
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy, read_policy
from smpq_onnx.quant.weight_rounding import ROUNDING_METHODS, RoundingSettings
from smpq_onnx.strategy.space import SearchSpace

Provider = Literal["auto", "cpu", "cuda"]
Optimization = Literal["disable", "basic", "extended", "all"]
PolicyLike = Policy | Mapping[str, Option | str] | str | Path


def runtime_config(provider: str = "auto", threads: int = 0,
                   optimization: str = "all") -> RuntimeConfig:
    """ONNX Runtime settings of every evaluation, checked."""
    one_of(provider, get_args(Provider), "provider")
    one_of(optimization, get_args(Optimization), "optimization")
    if threads < 0:
        raise InvalidArgumentError(f"threads must be >= 0 (0: all cores), got {threads}")
    return RuntimeConfig(provider=provider, threads=threads,  # type: ignore[arg-type]
                         optimization=optimization)  # type: ignore[arg-type]


def one_of(value: str, allowed: tuple[str, ...] | list[str], name: str) -> str:
    if value not in allowed:
        raise InvalidArgumentError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return value


def resolve_policy(space: SearchSpace, *, bits: str | None, policy: PolicyLike | None,
                   default_bits: str | None, fallback: str) -> Policy:
    """The policy given by ``bits`` or ``policy`` (with ``default_bits``), else ``fallback``."""
    if bits and policy is not None:
        raise InvalidArgumentError("give --bits or --policy, not both")
    if policy is not None:
        default = Option.parse(default_bits) if default_bits else None
        names = [layer.name for layer in space.layers]
        if isinstance(policy, str | Path):
            return space.validate(read_policy(Path(policy), default=default, layer_names=names))
        options = {name: o if isinstance(o, Option) else Option.parse(o)
                   for name, o in policy.items()}
        if default is not None:
            options = {**dict.fromkeys(names, default), **options}
        return space.validate(Policy(options))
    if default_bits:
        raise PolicyError("--default-bits only completes a --policy file")
    return space.uniform(Option.parse(bits or fallback))


def parse_input_shapes(texts: Iterable[str]) -> dict[str, tuple[int, ...]] | None:
    """``["x=1x3x640x640", ...]`` (``--input-shape``, repeatable) -> input -> full shape.

    Only the form is checked here; names, ranks and the batch of 1 are checked against the
    model when it is imported.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, _, dims = text.rpartition("=")
        if not name or not re.fullmatch(r"\d+(x\d+)*", dims.strip()):
            raise InvalidArgumentError(
                f"--input-shape {text!r} is not NAME=DIMS; write the input's full shape with "
                "the batch as 1, sizes joined by x, e.g. images=1x3x640x640")
        values = tuple(int(d) for d in dims.strip().split("x"))
        if any(d <= 0 for d in values):
            raise InvalidArgumentError(
                f"--input-shape {text!r} has a dimension <= 0; give positive sizes")
        if name in shapes:
            raise InvalidArgumentError(f"--input-shape names input '{name}' twice; give it once")
        shapes[name] = values
    return shapes or None


def writable_file(path: Path, flag: str = "--out") -> Path:
    """``path`` as a file to write: not an existing folder, no file where a folder must be."""
    if path.is_dir():
        raise InvalidArgumentError(
            f"{flag} {path} is an existing directory; give the file to write, e.g. "
            f"{path / 'model.qdq.onnx'}")
    _check_parents(path.parent, flag)
    return path


def writable_folder(path: Path, flag: str = "--out") -> Path:
    """``path`` as a folder to write into: not an existing file."""
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(
            f"{flag} {path} is an existing file; it names the folder the results go to: give "
            "a folder path")
    _check_parents(path, flag)
    return path


def _check_parents(path: Path, flag: str) -> None:
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise InvalidArgumentError(
                    f"{flag}: {parent} is a file, not a folder; give a path inside a folder")
            return


def rounding_settings(method: str, bias_correction: bool,
                      scale_search: bool = False) -> RoundingSettings:
    one_of(method, ROUNDING_METHODS, "rounding")
    return RoundingSettings(method=method, bias_correction=bias_correction,
                            scale_search=scale_search)


def policy_weight_bits(bits: str | None, policy: object | None) -> set[int] | None:
    """The weight bit-widths a ``--bits`` option needs rounded (None: a policy or the default
    may use any, so round them all)."""
    if bits is None or policy is not None:
        return None
    return {Option.parse(bits).w_bits}
