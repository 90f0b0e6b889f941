"""Typed errors. The CLI turns each into one line on stderr and the class's exit code.

Every message names the object at fault and, where there is one, the fix.
"""

from __future__ import annotations


class SmpqError(Exception):
    """Base of every error the tool reports to the user."""

    exit_code = 2


class ModelLoadError(SmpqError):
    """The model file is missing, unreadable, truncated or not ONNX."""


class UnsupportedModelError(SmpqError):
    """The model is valid ONNX but outside what the tool handles (opset, dtype, no layers)."""


class ProfileError(SmpqError):
    """A device profile is unknown or does not follow the schema."""


class PolicyError(SmpqError):
    """A policy names unknown layers, illegal bit-widths, or breaks a quantizer group."""


class DataError(SmpqError):
    """Input data is missing or does not match the model's inputs."""


class MissingDependencyError(SmpqError):
    """An optional dependency a chosen feature needs is not installed (the message says how)."""


class BudgetInfeasibleError(SmpqError):
    """No policy in the search space meets every budget."""

    exit_code = 3


class InvalidArgumentError(SmpqError):
    """An option value, or a combination of options, that the operation cannot take."""


class AccuracyTargetMissedError(SmpqError):
    """``max_drop`` was asked for and no policy within the budget met it."""

    exit_code = 4
