"""The one place where argv lists become shell strings.

Plans hold argv lists. A string for a shell exists only where a shell will parse it: the
remote command of an ssh step, the ``--format bash`` script and human-readable output.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

# The bash recipe joins the worker's commands with " ; " (each runs whatever the last did).
REMOTE_SEPARATOR = " ; "


def shell_join(argv: Sequence[str]) -> str:
    """Quote ``argv`` for a POSIX shell; plain words stay as they are."""
    return shlex.join(argv)


def remote_command(commands: Iterable[Sequence[str]]) -> str:
    """The single ssh argument that runs ``commands`` one after another, errors ignored."""
    return REMOTE_SEPARATOR.join(shell_join(c) for c in commands)


def quote(word: str) -> str:
    return shlex.quote(word)


def shell_command(commands: Iterable[Sequence[str]], cwd: str | None = None,
                  env: Iterable[tuple[str, str]] = ()) -> str:
    """``cd CWD && env K=V argv && ...``: stop at the first failure; every command gets the env
    (as ``env`` argv words, so it applies to each command, not just the first)."""
    prefix = ("env", *(f"{k}={v}" for k, v in env))
    parts = [shell_join((*prefix, *c) if len(prefix) > 1 else c) for c in commands]
    if cwd:
        parts.insert(0, shell_join(["cd", cwd]))
    return " && ".join(parts)


def printable(text: str) -> str:
    """``text`` with every control character (an escape sequence, a carriage return, a newline)
    written escaped, as Python writes it (``\\x1b``): safe to print to a terminal or a comment."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


def comment(text: str) -> str:
    """``text`` as one shell comment line: a newline (or any control character) in a value
    is written escaped, so it can never end the comment and start a command."""
    return "# " + printable(text)
