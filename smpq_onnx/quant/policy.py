"""Policies: a frozen, hashable map layer -> option, and their JSON files.

File format (JSON): ``{"layer name": {"w_bits": 4, "a_bits": 8}, ...}``; 32 means float.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from smpq_onnx.errors import PolicyError
from smpq_onnx.quant.options import Option


class Policy(Mapping[str, Option]):
    """Immutable layer -> option mapping; equal policies hash equal (usable as a cache key)."""

    __slots__ = ("_items", "_map")

    def __init__(self, choices: Mapping[str, Option]) -> None:
        self._items = tuple(sorted(choices.items()))
        self._map = dict(self._items)

    def __getitem__(self, name: str) -> Option:
        return self._map[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self._items == other._items

    def __repr__(self) -> str:
        return f"Policy({', '.join(f'{k}={v}' for k, v in self._items)})"

    def sort_key(self) -> tuple[tuple[str, str], ...]:
        """(layer, option text) by layer name: an order of policies that does not depend on
        the order in which they were measured (ties in the search's rankings go by it)."""
        return tuple((name, str(option)) for name, option in self._items)

    def replace(self, **changes: Option) -> Policy:
        return Policy({**self._map, **changes})

    def to_json_dict(self) -> dict[str, dict[str, int]]:
        return {name: {"w_bits": o.w_bits, "a_bits": o.a_bits} for name, o in self._items}


def read_policy(path: str | Path, *, default: Option | None = None,
                layer_names: list[str] | None = None) -> Policy:
    """Read a policy file; layers it omits take ``default`` when given."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file not found: {path}; check the path")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PolicyError(f"policy file {path} is not valid JSON ({e}); fix the syntax") from e
    if not isinstance(raw, dict):
        raise PolicyError(f"policy file {path}: expected an object of layer -> "
                          '{"w_bits": N, "a_bits": N}')
    choices: dict[str, Option] = {}
    for name, entry in raw.items():
        if (not isinstance(entry, dict) or set(entry) != {"w_bits", "a_bits"}
                or not all(isinstance(v, int) and not isinstance(v, bool)
                           for v in entry.values())):
            raise PolicyError(f"policy file {path}: layer '{name}' must map to "
                              '{"w_bits": N, "a_bits": N} with integer bits')
        choices[name] = Option(entry["w_bits"], entry["a_bits"])
    if default is not None and layer_names is not None:
        for name in layer_names:
            choices.setdefault(name, default)
    return Policy(choices)


def write_policy(policy: Policy, path: str | Path) -> None:
    """Write ``policy`` as JSON atomically (temp file in the same folder, then rename)."""
    write_text_atomic(Path(path), json.dumps(policy.to_json_dict(), indent=2) + "\n")


def publish(tmp: Path, path: Path) -> None:
    """Give a finished temp file the usual permissions and rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
