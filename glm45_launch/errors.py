"""The one exception type the CLI turns into a single clear line, and the exit codes."""

from __future__ import annotations

import os
import stat
from enum import IntEnum
from pathlib import Path

PROG = "glm45-launch"  # the name every message starts with
MAX_MESSAGE = 1000  # characters of an error message; longer input quoted in one is cut
MAX_INPUT_BYTES = 4 * 1024 * 1024  # a hostfile or recipe file larger than this is refused unread


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
        text = message.replace("\n", " ").strip()
        if len(text) > MAX_MESSAGE:  # a 10 MB hostfile line must not become a 10 MB message
            text = f"{text[:MAX_MESSAGE]}... ({len(text)} characters)"
        super().__init__(text)
        self.exit_code = exit_code


def undecoded(text: str) -> str:
    """``text`` with the bytes that were not UTF-8 (Python's lone surrogates) shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_user_file(path: str | Path, what: str, missing_hint: str = "", max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a file the user named, read with a bound; every failure is a ``LaunchError``
    ``FILE: reason``. Only a regular file is read: a FIFO, a device (``/dev/zero``) or a socket
    is refused before any read, so nothing blocks or fills memory."""
    p = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise LaunchError(f"{p}: no such {what}{missing_hint}") from None
    except IsADirectoryError:
        raise LaunchError(f"{p}: is a directory, not a {what}") from None
    except OSError as exc:
        raise LaunchError(f"{p}: cannot read {what}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise LaunchError(f"{p}: is a directory, not a {what}")
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise LaunchError(f"{p}: is {kind}, not a {what} (give a regular file)")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise LaunchError(f"{p}: larger than {max_bytes} bytes: too big for a {what}")
        return b"".join(chunks)
    except OSError as exc:
        raise LaunchError(f"{p}: cannot read {what}: {exc.strerror}") from None
    finally:
        os.close(fd)
