"""What a recording holds, and how its frames (``programs/record.bash``) become one.

A ``Recording`` is the argv of every command the script ran that the recorder recorded instead
(in order, with the line each came from), the polls it answered, the wait loops it ended, the
writes it skipped, the script's exit status, stdout, stderr and notes. ``FrameLog`` reads the
frames of one recording in order.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from glm45_launch.core.steps import canonical_order
from glm45_launch.sandbox.channel import Frame


@dataclass(frozen=True)
class Cluster:
    """What a poll of the cluster hears: the planned GPUs and nodes."""

    total_gpus: int
    gpus_per_node: int
    nodes: int


@dataclass(frozen=True)
class Origin:
    """Where a recorded command comes from: the script's file and line, its subshell depth (1
    and more: a command substitution or a subshell) and the ``VAR=value`` words before it."""

    source: str
    line: int
    subshell: int = 0
    env: tuple[str, ...] = ()


@dataclass
class Poll:
    """A command the recording answered instead of recording it: ``argv`` asked, ``answer`` is
    what it printed; ``kind``: "cluster" (the planned cluster's GPUs, ray status) or
    "computed" (arithmetic on literals in ``python3 -c``)."""

    argv: list[str]
    answer: str
    kind: str = "cluster"
    origin: Origin | None = None


@dataclass
class Wait:
    """A wait loop the hooks ended: ``count`` x ``argv`` (a sleep) recorded, then ``break``;
    ``test`` is the loop's last other command, expanded (``[ ! -f /x/done ]``)."""

    argv: list[str]
    count: int
    test: list[str]


@dataclass
class Recording:
    """What a script did in the recording sandbox."""

    invocations: list[list[str]]
    """argv of each recorded command (argv[0] is the bare command name), in recording order
    (without answered polls and the sleeps of ended wait loops: see ``polls``, ``waits``)."""
    returncode: int
    """The script's exit status (negative: the recording was killed by that signal)."""
    stdout: str
    stderr: str
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)
    """Anomalies: commands recorded or skipped instead of run (and why), timeout, leftover
    processes, output cut off, non-zero exit, unreadable frames."""
    polls: list[Poll] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    stopped: str = ""
    """Why the recording was stopped before the script ended ("": it was not, or timed out)."""
    origins: list[Origin | None] = field(default_factory=list)
    """Per invocation (when known): where in the script it comes from."""
    outside_writes: list[str] = field(default_factory=list)
    """Files the script tried to write outside the sandbox (the writes were skipped)."""
    environments: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    """(argv, its whole environment) of the records the recording was asked to capture it for."""

    def origin(self, index: int) -> Origin | None:
        return self.origins[index] if index < len(self.origins) else None

    @property
    def complete(self) -> bool:
        return not self.timed_out and not self.stopped

    def canonical(self) -> list[list[str]]:
        """Head-side commands in order, then the (parallel) ssh fan-out sorted by argv[1:]."""
        return canonical(self.invocations)


def canonical(invocations: Recording | Iterable[Sequence[str]]) -> list[list[str]]:
    """Order-independent form of the ssh fan-out: non-ssh argv in order, then ssh sorted."""
    if isinstance(invocations, Recording):
        invocations = invocations.invocations
    return canonical_order(invocations)


class FrameLog:
    """The frames of one recording, read in order."""

    def __init__(self) -> None:
        self.invocations: list[list[str]] = []
        self.origins: list[Origin | None] = []
        self.environments: list[tuple[list[str], dict[str, str]]] = []
        self.polls: list[Poll] = []
        self.waits: list[Wait] = []
        self.notes: list[str] = []
        self.outside: list[str] = []
        self.status: int | None = None
        self.started = False

    def read(self, frames: Iterable[Frame], max_notes: int = 200) -> FrameLog:
        """Read ``frames``; the notes, each said once, are cut to ``max_notes`` (the channel is
        the script's to write too: it may send notes without end)."""
        for frame in frames:
            if frame.kind in ("H", "N", "S", "L"):
                self._plain(frame.kind, frame.payload.decode("utf-8", "replace"))
            elif frame.kind in ("R", "P", "W", "O") and (parts := self._json(frame)) is not None:
                getattr(self, f"_frame_{frame.kind}")(*parts)
        notes = list(dict.fromkeys(n[:1000] for n in self.notes if n))
        if len(notes) > max_notes:
            notes[max_notes:] = [f"{len(notes) - max_notes} more note(s) from the sandbox left out"]
        self.notes = notes
        return self

    def _plain(self, kind: str, text: str) -> None:
        if kind == "H":
            self.started = True
        elif kind == "N":
            self.notes.append(text)
        elif kind == "S" and text.isdigit():
            self.status = int(text)
        elif kind == "L":
            self.notes.append(f"killed {text} process(es) left running by the script")

    def _json(self, frame: Frame) -> list[object] | None:
        try:
            parts = json.loads(frame.payload.decode("utf-8", "surrogateescape"))
        except ValueError:
            parts = None
        if isinstance(parts, list) and parts:
            return parts + [None] * 4
        self.notes.append(f"unreadable {frame.kind} frame: {frame.payload[:80]!r}")
        return None

    def _frame_R(self, argv: object, origin: object, env: object, *_: object) -> None:
        if _words(argv) and argv:
            self.invocations.append(argv)  # type: ignore[arg-type]
            self.origins.append(_origin(origin))
            if _words(env):
                self.environments.append((argv, dict(kv.split("=", 1) for kv in env if "=" in kv)))  # type: ignore

    def _frame_P(self, kind: object, answer: object, argv: object, origin: object, *_: object) -> None:
        if _words(argv) and argv and isinstance(kind, str) and isinstance(answer, str):
            self.polls.append(Poll(argv, answer, kind, _origin(origin)))  # type: ignore[arg-type]
            how = "as the planned cluster would" if kind == "cluster" else f"with {answer} (arithmetic)"
            self.notes.append(f"answered `{shlex.join(argv)[:120]}` {how}")  # type: ignore[arg-type]

    def _frame_W(self, count: object, sleep: object, test: object, *_: object) -> None:
        if isinstance(count, int) and _words(sleep) and _words(test):
            self.waits.append(_wait(count, sleep, test, self.invocations, self.origins))  # type: ignore[arg-type]

    def _frame_O(self, path: object, *_: object) -> None:
        if isinstance(path, str) and path not in self.outside:
            self.outside.append(path)


def _words(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(w, str) for w in value)


def _origin(words: object) -> Origin | None:
    """An origin as the shims send it: [file, line, subshell, VAR=value...]."""
    if not _words(words) or len(words) < 3:  # type: ignore[arg-type]
        return None
    source, line, subshell, *env = words  # type: ignore[misc]
    return Origin(source, int(line) if line.isdigit() else 0, int(subshell) if subshell.isdigit() else 0, tuple(env))


def _wait(count: int, sleep: list[str], test: list[str], invocations: list[list[str]],
          origins: list[Origin | None]) -> Wait:
    """The loop's recorded sleeps (the last ``count`` of them; polls may be between) leave the
    invocations: they are the wait, not commands (the one that ended it was not run)."""
    removed = 0
    for i in range(len(invocations) - 1, -1, -1):
        if removed == count:
            break
        if invocations[i] == sleep:
            del invocations[i], origins[i]
            removed += 1
    return Wait(sleep, removed, test)
