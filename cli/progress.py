"""Progress bars on the terminal (stderr), silent when not a terminal or when disabled."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

import click


class TerminalProgress:
    """A callable ``progress(phase, done, total)`` drawing one click progress bar per phase."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bars: dict[str, Any] = {}
        self._done: dict[str, int] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if phase not in self._bars:
            bar = click.progressbar(length=total, label=phase, file=sys.stderr,
                                    show_eta=True, show_pos=True)
            self._bars[phase] = bar.__enter__()
            self._done[phase] = 0
        self._bars[phase].update(done - self._done[phase])
        self._done[phase] = done
        if done >= total:
            self._bars.pop(phase).__exit__(None, None, None)

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for bar in self._bars.values():
            bar.__exit__(None, None, None)
        self._bars.clear()
