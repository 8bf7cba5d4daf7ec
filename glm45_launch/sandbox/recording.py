"""What a recording holds, and how its frames (``programs/record.bash``) become one.

A ``Recording`` is the argv of every command the script ran that the recorder recorded instead
(in order, with the line each came from), the polls it answered, the wait loops it ended, the
writes it skipped, the script's exit status, stdout, stderr and notes. ``FrameLog`` reads the
frames of one recording in order and links each record to the origin its shell announced.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Iterable, Sequence
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

    def where(self) -> str:
        return f"{os.path.basename(self.source) or 'script'}:{self.line}"


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
    """The frames of one recording, read in order (``on_file`` gets the F frames)."""

    def __init__(self, on_file: Callable[[Frame, list[str]], None]) -> None:
        self.invocations: list[list[str]] = []
        self.origins: list[Origin | None] = []
        self.polls: list[Poll] = []
        self.waits: list[Wait] = []
        self.notes: list[str] = []
        self.outside: list[str] = []
        self.status: int | None = None
        self.started = False
        self._pending: dict[str, list[tuple[str, Origin]]] = {}
        self._loop_ends: dict[str, Wait] = {}  # the sleep that ends a wait loop, by the loop's shell
        self._on_file = on_file

    def read(self, frames: Iterable[Frame], max_notes: int = 200) -> FrameLog:
        """Read ``frames``; the notes, each said once, are cut to ``max_notes`` (the channel is
        the script's to write too: it may send notes without end)."""
        for frame in frames:
            handler = getattr(self, f"_frame_{frame.kind}", None)
            if handler is not None:
                handler(frame)
        notes = list(dict.fromkeys(n[:1000] for n in self.notes if n))
        if len(notes) > max_notes:
            notes[max_notes:] = [f"{len(notes) - max_notes} more note(s) from the sandbox left out"]
        self.notes = notes
        return self

    def _frame_H(self, frame: Frame) -> None:
        self.started = True

    def _frame_N(self, frame: Frame) -> None:
        self.notes.append(frame.payload.decode("utf-8", "replace"))

    def _frame_S(self, frame: Frame) -> None:
        if frame.payload.isdigit():
            self.status = int(frame.payload)

    def _frame_L(self, frame: Frame) -> None:
        self.notes.append(f"killed {frame.payload.decode()} process(es) left running by the script")

    def _frame_F(self, frame: Frame) -> None:
        self._on_file(frame, self.notes)

    def _frame_R(self, frame: Frame) -> None:
        argv = _argv(frame, self.notes)
        if argv is None:
            return
        pids = frame.pid.split(":")
        ended = self._loop_ends.get(pids[-1])
        if ended is not None and ended.argv == argv:
            del self._loop_ends[pids[-1]]
            ended.count += 1
            return
        self.invocations.append(argv)
        self.origins.append(_take_origin(self._pending, pids, argv[0] if argv else ""))

    def _frame_C(self, frame: Frame) -> None:
        words = _argv(frame, self.notes)
        if words and len(words) >= 4:
            line = int(words[1]) if words[1].isdigit() else 0
            subshell = int(words[2]) if words[2].isdigit() else 0
            origin = Origin(words[0], line, subshell, tuple(words[4:]))
            self._pending.setdefault(frame.pid, []).append((words[3], origin))

    def _frame_O(self, frame: Frame) -> None:
        words = _argv(frame, self.notes)
        if words and words[0] not in self.outside:
            self.outside.append(words[0])

    def _frame_P(self, frame: Frame) -> None:
        words = _argv(frame, self.notes)
        if not words or len(words) < 3:
            return
        origin = _take_origin(self._pending, frame.pid.split(":"), words[2])
        self.polls.append(Poll(words[2:], words[1], words[0], origin))
        how = "as the planned cluster would" if words[0] == "cluster" else f"with {words[1]} (arithmetic)"
        self.notes.append(f"answered `{shlex.join(words[2:])[:120]}` {how}")

    def _frame_W(self, frame: Frame) -> None:
        words = _argv(frame, self.notes)
        if words and len(words) > 2:
            self.waits.append(_wait(words, self.invocations, self.origins))
            self._loop_ends[frame.pid] = self.waits[-1]


def _argv(frame: Frame, notes: list[str]) -> list[str] | None:
    try:
        argv = json.loads(frame.payload.decode("utf-8", "surrogateescape"))
    except ValueError:
        argv = None
    if not isinstance(argv, list) or not all(isinstance(w, str) for w in argv):
        notes.append(f"unreadable {frame.kind} frame: {frame.payload[:80]!r}")
        return None
    return argv


def _take_origin(pending: dict[str, list[tuple[str, Origin]]], pids: list[str], name: str) -> Origin | None:
    """The oldest origin announced for ``name`` by the recording process or its parent."""
    for pid in pids:
        queue = pending.get(pid, [])
        for i, (announced, origin) in enumerate(queue):
            if announced == name:
                del queue[i]
                return origin
    return None


def _wait(words: list[str], invocations: list[list[str]], origins: list[Origin | None]) -> Wait:
    """A W frame (count, sleep argv length, sleep argv, test words); the loop's recorded
    sleeps leave the invocations (they are the wait, not commands), as will the one that
    ends it, recorded next."""
    count = int(words[0]) if words[0].isdigit() else 0
    n = int(words[1]) if words[1].isdigit() else 0
    sleep, test = words[2 : 2 + n], words[2 + n :]
    removed = 0
    for i in range(len(invocations) - 1, -1, -1):  # the last ``count`` of them (polls may be between)
        if removed == count:
            break
        if invocations[i] == sleep:
            del invocations[i], origins[i]
            removed += 1
    return Wait(sleep, removed, test)


