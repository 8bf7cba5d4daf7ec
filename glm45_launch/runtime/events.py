"""A run's event log: ``events.jsonl`` in the run directory, one JSON object per line.

What happened around the job, with wall-clock times (``t``, seconds since the epoch): a fault
seen, the job stop sent, the job stopped, a forced stop, each attempt. Tools read it (the
fault-to-stop benchmark); people read the reporter's lines.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class EventLog:
    """Appends events to ``path`` (thread-safe); a write error never stops the run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def add(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "t": round(time.time(), 3), **fields}, default=str)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as fh:
                    fh.write(line + "\n")
            except OSError:
                pass


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of ``path`` (unreadable lines skipped; no file: none)."""
    out = []
    try:
        text = path.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
