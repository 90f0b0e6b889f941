"""Device profiles: what a target can run and what it can hold.

A profile is a YAML file validated strictly against :class:`DeviceProfile`: unknown keys, wrong
types and empty option lists are errors naming the key. Built-in profiles ship as package data
in ``smpq_onnx.hw_profiles``; ``--hw NAME`` finds one, ``--hw path.yaml`` reads a file.
"""

from __future__ import annotations

import itertools
import json
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import onnx.defs
import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smpq_onnx.errors import ProfileError
from smpq_onnx.quant.options import FP32, QUANT_BITS, Option

SCHEMA_VERSION = 1
_PROFILE_PACKAGE = "smpq_onnx.hw_profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class QuantScheme(_Strict):
    """How one side (weights or activations) is quantized on the target."""

    granularity: Literal["per_channel", "per_tensor"]
    symmetric: bool
    narrow_range: bool = False


class OpRules(_Strict):
    """Per-op-type rules. Names are ONNX op types (``Conv``, ``Concat``, ...)."""

    unquantizable: tuple[str, ...] = ()
    """Layers of these op types stay in float (their only option is FP32)."""
    shared_scale: tuple[str, ...] = ()
    """The inputs and output of these ops must share one quantizer (e.g. integer Concat)."""

    @field_validator("unquantizable", "shared_scale")
    @classmethod
    def _known_ops(cls, ops: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [op for op in ops if not onnx.defs.has(op)]
        if unknown:
            raise ValueError(f"unknown ONNX op type(s) {unknown}")
        return ops


class MemoryLimits(_Strict):
    flash_bytes: int | None = Field(default=None, gt=0)
    """Weight memory (non-volatile storage for the model's constants)."""
    sram_bytes: int | None = Field(default=None, gt=0)
    """Working memory for activations (the tensor arena)."""


class Throughput(_Strict):
    """Latency model: MACs per cycle for each (W, A) option at a clock frequency."""

    clock_hz: float = Field(gt=0)
    macs_per_cycle: dict[str, float]

    @field_validator("macs_per_cycle")
    @classmethod
    def _valid_rates(cls, rates: dict[str, float]) -> dict[str, float]:
        if not rates:
            raise ValueError("must list at least one option")
        for key, rate in rates.items():
            Option.parse(key)
            if rate <= 0:
                raise ValueError(f"rate for {key} must be > 0")
        return rates


class Budgets(_Strict):
    """Default budgets for a search; every one given must hold at once."""

    bops: int | None = Field(default=None, gt=0)
    bops_ratio: float | None = Field(default=None, gt=0, le=1)
    """Fraction of the model's uniform W8A8 BOPs."""
    flash_bytes: int | None = Field(default=None, gt=0)
    sram_bytes: int | None = Field(default=None, gt=0)
    latency_s: float | None = Field(default=None, gt=0)


class DeviceProfile(_Strict):
    """A validated device profile. Construct with :func:`load_profile`."""

    schema_version: Literal[1]
    name: str = Field(min_length=1)
    description: str
    weight_bits: tuple[int, ...] = Field(min_length=1)
    activation_bits: tuple[int, ...] = Field(min_length=1)
    pairs: tuple[str, ...] | None = None
    """Allowed (W, A) pairs as ``W8A8`` strings; absent means every combination."""
    allow_fp32: bool = False
    """Whether a layer may be left in float."""
    default_option: str = "W8A8"
    """The option ``smpq-onnx profile`` uses when no ``--bits`` is given."""
    weight_quantization: QuantScheme
    activation_quantization: QuantScheme
    ops: OpRules = OpRules()
    memory: MemoryLimits = MemoryLimits()
    throughput: Throughput | None = None
    budgets: Budgets = Budgets()
    scale_bytes: int = Field(default=4, gt=0)
    """Bytes stored per quantization scale (float32 = 4)."""
    float_activation_bits: int = 32
    """Storage bits of activations that feed no quantized layer (float ops, graph outputs)."""

    @field_validator("weight_bits", "activation_bits")
    @classmethod
    def _quant_bits(cls, bits: tuple[int, ...]) -> tuple[int, ...]:
        bad = [b for b in bits if b not in QUANT_BITS]
        if bad:
            raise ValueError(f"bit-widths {bad} are not supported; use 2-8 or 16")
        if len(set(bits)) != len(bits):
            raise ValueError("lists a bit-width twice")
        return bits

    @field_validator("float_activation_bits")
    @classmethod
    def _storage_bits(cls, bits: int) -> int:
        if bits not in (*QUANT_BITS, 32):
            raise ValueError("must be 2-8, 16 or 32")
        return bits

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if self.pairs is not None:
            if not self.pairs:
                raise ValueError("pairs: must list at least one pair (or be left out)")
            for text in self.pairs:
                option = Option.parse(text)
                if option.w_bits not in self.weight_bits:
                    raise ValueError(f"pairs: {text} uses weight bits not in weight_bits")
                if option.a_bits not in self.activation_bits:
                    raise ValueError(f"pairs: {text} uses activation bits not in activation_bits")
        if Option.parse(self.default_option) not in self.options:
            raise ValueError(f"default_option: {self.default_option} is not an allowed option")
        if self.throughput is not None:
            missing = [str(o) for o in self.quantized_options
                       if str(o) not in self.throughput.macs_per_cycle]
            if missing:
                raise ValueError(f"throughput.macs_per_cycle: no rate for {missing}")
        return self

    @cached_property
    def quantized_options(self) -> tuple[Option, ...]:
        """Legal quantized options, sorted from cheapest to most precise."""
        if self.pairs is not None:
            options = {Option.parse(p) for p in self.pairs}
        else:
            options = {Option(w, a) for w, a in
                       itertools.product(self.weight_bits, self.activation_bits)}
        return tuple(sorted(options))

    @cached_property
    def options(self) -> tuple[Option, ...]:
        """Every legal option of a quantizable layer, FP32 last when allowed."""
        return self.quantized_options + ((FP32,) if self.allow_fp32 else ())

    def macs_per_second(self, option: Option) -> float | None:
        """Throughput of ``option`` in MACs/s, or None when the profile gives none."""
        if self.throughput is None:
            return None
        rate = self.throughput.macs_per_cycle.get(str(option))
        return None if rate is None else rate * self.throughput.clock_hz


def builtin_profile_names() -> list[str]:
    folder = resources.files(_PROFILE_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str) -> DeviceProfile:
    """Load a built-in profile by name, or a YAML file by path."""
    looks_like_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path
    if looks_like_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"profile file not found: {name_or_path}; check the path")
        return _parse_profile(path.read_text(encoding="utf-8"), source=str(path))
    resource = resources.files(_PROFILE_PACKAGE) / f"{name_or_path}.yaml"
    if not resource.is_file():
        known = ", ".join(builtin_profile_names())
        raise ProfileError(
            f"unknown device profile {name_or_path!r}; built-in profiles: {known} "
            "(or give a path to a .yaml file)"
        )
    return _parse_profile(resource.read_text(encoding="utf-8"), source=name_or_path)


def _parse_profile(text: str, *, source: str) -> DeviceProfile:
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ProfileError(f"profile {source}: invalid YAML{line}; fix the syntax") from e
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {source}: expected a mapping of keys at the top level")
    try:
        # JSON mode: strict types, with YAML sequences accepted for tuple fields.
        return DeviceProfile.model_validate_json(json.dumps(raw, default=str))
    except pydantic.ValidationError as e:
        raise ProfileError(f"profile {source}: {_first_problem(e)}") from e


def _first_problem(error: pydantic.ValidationError) -> str:
    problem = error.errors()[0]
    key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
    message = problem["msg"]
    if problem["type"] == "extra_forbidden":
        message = "unknown key; remove it or check its spelling"
    elif problem["type"] == "missing":
        message = "required key is missing"
    more = error.error_count() - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"key '{key}': {message}{suffix}"
