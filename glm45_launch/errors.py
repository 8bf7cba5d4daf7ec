"""The one exception type the CLI turns into a single clear line and a non-zero exit."""

from __future__ import annotations

PROG = "glm45-launch"  # the name every message starts with


class LaunchError(Exception):
    """A user-facing failure: bad input, unreachable host, failed step.

    ``str(err)`` is the whole message, one line, naming the culprit.
    ``exit_code`` is what the CLI exits with (2 for bad input, 1 for a failed run).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message.replace("\n", " ").strip())
        self.exit_code = exit_code
