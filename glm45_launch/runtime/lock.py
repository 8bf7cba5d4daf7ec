"""One ``up`` per head at a time: an exclusive lock held for the whole launch.

Two launches on one head would kill each other's Ray head in their cleanups and both fail
without saying why. ``up`` takes ``flock`` on a file on the head before anything runs; the
kernel drops it when the process ends, however it ends, so a crashed run never leaves a stale
lock. The file says who holds it (PID, start time, run directory) for the refusal message.
``down`` and ``status`` do not take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from glm45_launch.errors import ExitCode, LaunchError

LOCK_DIR_ENV = "GLM45_LOCK_DIR"  # where the lock lives (default /tmp/glm45-launch)


def lock_path() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV, "/tmp/glm45-launch")) / "up.lock"


@contextmanager
def head_lock(run_dir: Path | None = None, path: Path | None = None) -> Iterator[Path]:
    """Hold the head's launch lock for the ``with`` block, or raise naming its holder."""
    target = path or lock_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LaunchError(f"cannot open the launch lock {target}: {exc.strerror}", exit_code=ExitCode.FAILED) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaunchError(f"another `glm45-launch up` is running on this head: {_holder(fd)} (lock {target}); "
                              "wait for it, or stop it first (Ctrl-C it, or `glm45-launch down`)",
                              exit_code=ExitCode.FAILED) from None
        info = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "run_dir": str(run_dir) if run_dir else None}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
        yield target
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _holder(fd: int) -> str:
    """``pid N, started T, run R`` from the lock file (what the holder wrote)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except ValueError:
        info = {}
    parts = [f"pid {info['pid']}" if info.get("pid") else "pid unknown"]
    if info.get("started"):
        parts.append(f"started {info['started']}")
    if info.get("run_dir"):
        parts.append(f"run {info['run_dir']}")
    return ", ".join(parts)


def running_up(path: Path | None = None) -> Path | None:
    """The run directory of the ``up`` holding this head's lock now (None: no ``up`` runs)."""
    target = path or lock_path()
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: an `up` runs
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            run_dir = info.get("run_dir") if isinstance(info, dict) else None
            return Path(run_dir) if run_dir else None
        return None
    except ValueError:
        return None
    finally:
        os.close(fd)
