"""The one exception type the CLI turns into a single clear line, and the exit codes."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path

PROG = "glm45-launch"  # the name every message starts with


class ExitCode(IntEnum):
    """What ``glm45-launch`` exits with."""

    OK = 0
    FAILED = 1  # a run failed: a host, a step, the job
    USAGE = 2  # bad input: an option, a file, the environment
    INTERNAL = 70  # a bug (EX_SOFTWARE): the message says how to see the traceback
    INTERRUPTED = 130  # Ctrl-C
    BROKEN_PIPE = 141  # stdout closed early (`| head`)


class LaunchError(Exception):
    """A user-facing failure: bad input, unreachable host, failed step.

    ``str(err)`` is the whole message, one line, naming the culprit.
    ``exit_code`` is what the CLI exits with (2 for bad input, 1 for a failed run).
    """

    def __init__(self, message: str, exit_code: int = ExitCode.USAGE) -> None:
        super().__init__(message.replace("\n", " ").strip())
        self.exit_code = exit_code


def read_user_file(path: str | Path, what: str, missing_hint: str = "") -> bytes:
    """The bytes of a file the user named; every failure is a ``LaunchError`` ``FILE: reason``."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise LaunchError(f"{p}: no such {what}{missing_hint}") from None
    except IsADirectoryError:
        raise LaunchError(f"{p}: is a directory, not a {what}") from None
    except OSError as exc:
        raise LaunchError(f"{p}: cannot read {what}: {exc.strerror}") from None
