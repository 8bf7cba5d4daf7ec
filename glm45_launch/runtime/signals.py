"""Ctrl-C, SIGTERM and SIGHUP (what ``timeout``, systemd, Slurm and a closed terminal send) as one
exception in the main thread, so every signal takes the run's one stop path; a second signal
forces (the stop path skips its graceful part); during the forced stop signals are counted,
not raised, so it finishes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from glm45_launch.runtime.causes import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signals:
    """Installed for the ``with`` block (main thread only; elsewhere it only counts nothing)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._shielded = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @property
    def forced(self) -> bool:
        """A second signal came: stop now, without the graceful part."""
        return len(self.received) >= 2

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if not self._shielded:
            raise Interrupted(signum, signal.Signals(signum).name)

    @contextmanager
    def shield(self) -> Iterator[None]:
        """Signals in the block are counted, not raised (the forced stop must finish)."""
        before, self._shielded = self._shielded, True
        try:
            yield
        finally:
            self._shielded = before


def describe(exc: BaseException) -> str:
    """``Ctrl-C``, ``SIGTERM``...: what interrupted the run."""
    name = getattr(exc, "name", "SIGINT")
    return "Ctrl-C" if name == "SIGINT" else name
