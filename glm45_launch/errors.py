"""The one exception type the CLI turns into a single clear line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

PROG = "glm45-launch"  # the name every message starts with


class LaunchError(Exception):
    """A user-facing failure: bad input, unreachable host, failed step.

    ``str(err)`` is the whole message, one line, naming the culprit.
    ``exit_code`` is what the CLI exits with (2 for bad input, 1 for a failed run).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
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
