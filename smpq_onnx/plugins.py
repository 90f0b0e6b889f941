"""User code named as ``module:function`` (data loaders, metrics), imported from the cwd."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smpq_onnx.errors import DataError


def load_function(spec: str, *, kind: str) -> Callable[..., Any]:
    """Import ``module:function`` (the current folder first on the path)."""
    module_name, _, function_name = spec.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as e:
        raise DataError(f"cannot load {kind} {spec} ({e}); check module and name") from e
    finally:
        sys.path.pop(0)
    if not callable(function):
        raise DataError(f"{kind} {spec} is not a function")
    return function
