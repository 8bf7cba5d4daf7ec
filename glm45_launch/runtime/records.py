"""A run's records in its directory, and the channel other shells use to talk to a running ``up``.

* ``events.jsonl``: what happened around the job, one JSON object per line with wall-clock
  times (``t``): a fault seen, the stop sent, the job stopped, each attempt. Tools read it (the
  fault-to-stop benchmark); people read the reporter's lines.
* ``attempts.json``, ``summary.json``: the attempts and the outcome; ``state.json``: where the run
  is now (``logs``/``attach`` read it while ``up`` restarts); ``job_id``: the current job.
* ``stop-request.json``: written by ``glm45-launch stop``/``down`` from another shell; the run
  ends without a restart and says who stopped it.

These files are small and must outlive a full disk (a job log that filled the run's
filesystem): a reserve file is made with the directory and given back the first time a write
fails for lack of space, and a write that still fails is warned about once, never raised.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESERVE = ".glm45-reserve"  # freed on the first ENOSPC, so the records can still be written
RESERVE_BYTES = 1024 * 1024
STOP_REQUEST = "stop-request.json"
STATE = "state.json"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class RunRecords:
    """Writes a run directory's small records; thread-safe; a failed write warns once."""

    def __init__(self, run_dir: Path, warn: Callable[[str], None] | None = None) -> None:
        self.run_dir = run_dir
        self._warn = warn
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    # -- space ----------------------------------------------------------------------------------
    def reserve(self) -> None:
        """Set space aside for the records (given back by :meth:`free_reserve`)."""
        try:
            with (self.run_dir / RESERVE).open("wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)
        except OSError:
            pass

    def free_reserve(self) -> bool:
        """Give the reserve back (True when there was one): the disk is full."""
        try:
            (self.run_dir / RESERVE).unlink()
            return True
        except OSError:
            return False

    def drop_reserve(self) -> None:
        """The run is over: the reserve is not needed any more."""
        self.free_reserve()

    # -- writes ---------------------------------------------------------------------------------
    def write(self, name: str, text: str) -> bool:
        """Replace ``name`` in the run directory with ``text`` (atomically); False if it could not."""
        path = self.run_dir / name
        tmp = path.with_name(f".{path.name}.tmp")
        return self._guarded(name, lambda: (tmp.write_text(text), os.replace(tmp, path)))

    def write_json(self, name: str, data: Any) -> bool:
        return self.write(name, json.dumps(data, indent=2, default=str) + "\n")

    def append(self, name: str, line: str) -> bool:
        path = self.run_dir / name

        def add() -> None:
            with path.open("a") as fh:
                fh.write(line + "\n")
        return self._guarded(name, add)

    def event(self, event: str, **fields: Any) -> None:
        """One line of ``events.jsonl``."""
        self.append("events.jsonl", json.dumps({"event": event, "t": round(time.time(), 3), **fields}, default=str))

    def _guarded(self, name: str, write: Callable[[], object]) -> bool:
        with self._lock:
            for attempt in (1, 2):
                try:
                    self.run_dir.mkdir(parents=True, exist_ok=True)
                    write()
                    return True
                except OSError as exc:
                    if attempt == 1 and exc.errno in _NO_SPACE and self.free_reserve():
                        continue  # the reserve made room: once more
                    self._say_once(name, exc)
                    return False
        return False

    def _say_once(self, name: str, exc: OSError) -> None:
        if name in self._warned or self._warn is None:
            return
        self._warned.add(name)
        why = "no space left on the device" if exc.errno in _NO_SPACE else (exc.strerror or str(exc))
        self._warn(f"cannot write {self.run_dir / name}: {why} (the run goes on)")


def read_json(path: Path) -> Any:
    """A JSON file's content, or None (missing, unreadable or damaged)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of ``path`` (unreadable lines skipped; no file: none)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def request_stop(run_dir: Path, by: str, job_id: str | None = None) -> bool:
    """Ask the ``up`` supervising ``run_dir`` to end without a restart (``glm45-launch stop``/``down``)."""
    info = {"by": by, "pid": os.getpid(), "job_id": job_id, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return RunRecords(run_dir).write_json(STOP_REQUEST, info)


def stop_request(run_dir: Path) -> dict[str, Any] | None:
    """The stop request written to ``run_dir`` (None: none)."""
    found = read_json(run_dir / STOP_REQUEST)
    return found if isinstance(found, dict) else None


def who_stopped(request: dict[str, Any]) -> str:
    """``glm45-launch down (pid 123, 12:00:01)`` for a message."""
    when = str(request.get("time") or "")
    return f"{request.get('by') or 'another shell'} (pid {request.get('pid', '?')}{', ' + when if when else ''})"
