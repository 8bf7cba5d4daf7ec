"""A run's directory: per-host logs, the plan, the summary; made before anything starts."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from glm45_launch.errors import ExitCode, LaunchError


def default_run_dir(base: Path | None = None) -> Path:
    """``./runs/<timestamp>`` (unique even for two launches in one second)."""
    root = (base or Path.cwd()) / "runs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / stamp
    n = 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{n}"
    return path


def prepare_run_dir(path: Path | str | None, option: str = "--run-dir") -> Path:
    """The run directory, created and proven writable (a probe file is written and removed):
    every problem is one line naming the directory, before the run touches any host."""
    target = Path(path).expanduser().resolve() if path else default_run_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".glm45-write-test-{os.getpid()}"
        with probe.open("w") as fh:
            fh.write("x" * 4096)  # a full disk fails here, not in the middle of the launch
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except FileExistsError:
        raise LaunchError(f"{option} {target}: exists and is not a directory") from None
    except NotADirectoryError:
        raise LaunchError(f"{option} {target}: a parent is not a directory") from None
    except OSError as exc:
        why = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        code = ExitCode.FAILED if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO) else ExitCode.USAGE
        raise LaunchError(f"{option} {target}: not writable: {why}", exit_code=code) from None
    return target
