"""What running a command returns, here or on a host, and what a fan-out returns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

TAIL_LINES = 20  # output lines a result keeps for error reports
TAIL_BYTES = 512 * 1024  # and at most this much of them: memory per host stays bounded
MAX_LINE = 256 * 1024  # a longer output line is logged in pieces
SHOWN = 400  # a logged command longer than this is shortened (a probe program)


def shown(command: str) -> str:
    """``command`` fit for a log line: long ones cut, with their length."""
    flat = command.replace("\n", "\\n")
    return flat if len(flat) <= SHOWN else f"{flat[:SHOWN]}... ({len(flat)} chars)"


ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt): .+")


@dataclass
class CommandResult:
    """One command's outcome. ``exit_code`` None: it never ran to completion, and ``error``
    says why in one line (cannot connect, timed out, cannot run)."""

    host: str = ""  # where it ran ("" here, on the launcher's machine)
    command: str = ""  # what ran, as one shell string (remote) or joined argv (here)
    argv: list[str] = field(default_factory=list)  # the argv, for commands run here
    exit_code: int | None = None
    error: str | None = None
    duration_s: float = 0.0
    attempts: int = 0  # connection attempts (remote)
    sent: bool = True  # False: it never reached the host (no connection), so nothing ran there
    output_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    @property
    def failed(self) -> bool:
        return not self.ok

    @property
    def reason(self) -> str:
        """One line: why it failed (empty when it did not)."""
        if self.ok:
            return ""
        return self.error or f"exit {self.exit_code}"

    def tail(self, lines: int = 10) -> list[str]:
        return self.output_tail[-lines:]

    @property
    def root_error(self) -> str:
        """The last ``SomeError: message`` line of its output ("" when there is none): a
        traceback's cause, for a one-line error. Matched by shape, not by diagnose.py's
        traceback reader: the kept tail (:data:`TAIL_LINES`) has often lost the traceback's head."""
        for line in reversed(self.output_tail):
            m = ERROR_LINE.match(line.strip())
            if m:
                return m.group(0)[:300]
        return ""

    def keep(self, line: str) -> None:
        """Remember ``line`` among the last lines of output (:func:`keep_line`)."""
        keep_line(self.output_tail, line)


def keep_line(tail: list[str], line: str) -> None:
    """Append ``line`` to ``tail``, keeping the last :data:`TAIL_LINES` lines and at most
    :data:`TAIL_BYTES` of them."""
    tail.append(line)
    del tail[:-TAIL_LINES]
    while len(tail) > 1 and sum(len(x) for x in tail) > TAIL_BYTES:
        del tail[0]


class FanOutResult(dict[str, CommandResult]):
    """host -> result of one command per host, in the order the hosts were given."""

    @classmethod
    def of(cls, results: Iterable[CommandResult]) -> FanOutResult:
        return cls((r.host, r) for r in results)

    @property
    def succeeded(self) -> dict[str, CommandResult]:
        return {h: r for h, r in self.items() if r.ok}

    @property
    def failed(self) -> dict[str, CommandResult]:
        return {h: r for h, r in self.items() if not r.ok}
