"""Test doubles of the runtime interfaces (:mod:`glm45_launch.runtime.interfaces`).

Opt-in, like ``fabric.testing``: a test builds a :class:`~glm45_launch.runtime.usecases.Runtime`
from these (:func:`fake_runtime`) and reads back what ran. Each records its calls and answers
from what the test told it; nothing here starts a process or opens a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm45_launch.runtime.interfaces import Echo, JobInfo, NodeInfo, Row
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.runtime import Runtime

Answer = Callable[[Sequence[str]], tuple[int, list[str]]]  # argv -> (exit code, output lines)


def _ok(_: Sequence[str]) -> tuple[int, list[str]]:
    return 0, []


class FakeLocalRunner:
    """Records argv run here; ``answer(argv)`` gives the exit code and output lines."""

    def __init__(self, answer: Answer = _ok) -> None:
        self.calls: list[list[str]] = []
        self.answer = answer
        self.killed: list[list[str]] = []

    def run(self, argv: Sequence[str], log_path: Path, echo: Echo | None = None,
            env: Mapping[str, str] | None = None, cwd: str | None = None, timeout_s: float | None = None,
            on_line: Echo | None = None) -> CommandResult:
        self.calls.append(list(argv))
        code, lines = self.answer(argv)
        for line in lines:
            if echo:
                echo(line)
            if on_line:
                on_line(line)
        return CommandResult(command=" ".join(argv), argv=list(argv), exit_code=code, output_tail=list(lines))

    def pkill_sparing(self, argv: Sequence[str], log_path: Path, spare: set[int]) -> CommandResult:
        if not spare:
            raise AssertionError("the launcher's own process and ancestors must be spared")
        self.calls.append(list(argv))
        self.killed.append(list(argv))
        return CommandResult(argv=list(argv), exit_code=1)  # nothing matched: no settle wait

    def kill_children(self) -> list[int]:
        return []


RemoteAnswer = Callable[[str, str], tuple[int | None, list[str]]]  # (host, command) -> (exit, lines)


class FakeRemoteRunner:
    """Records ``["ssh", "USER@HOST", command]``; ``answer(host, command)`` gives the exit code
    (None: cannot connect) and output lines."""

    def __init__(self, user: str = "root", answer: RemoteAnswer | None = None) -> None:
        self.user = user
        self.calls: list[list[str]] = []
        self.answer = answer or (lambda host, command: (0, []))
        self.closed = False

    def run(self, host: str, command: str, log_path: Path, echo: Echo | None = None,
            timeout_s: float | None = None) -> CommandResult:
        self.calls.append(["ssh", f"{self.user}@{host}", command])
        code, lines = self.answer(host, command)
        error = f"cannot connect to {host}: connection refused" if code is None else None
        return CommandResult(host=host, command=command, exit_code=code, error=error, output_tail=list(lines),
                             sent=code is not None)

    def close_all(self) -> None:
        self.closed = True


@dataclass
class FakeRay:
    """A cluster whose node table and job statuses the test sets."""

    node_table: list[NodeInfo] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    default_status: str = "SUCCEEDED"
    asked: list[str] = field(default_factory=list)
    times: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @classmethod
    def alive(cls, hosts: Sequence[str], gpus: float = 8.0) -> FakeRay:
        return cls([NodeInfo(ip=h, alive=True, gpus=gpus, is_head=i == 0) for i, h in enumerate(hosts)])

    def nodes(self, address: str) -> list[NodeInfo]:
        self.asked.append(address)
        return list(self.node_table)

    def job_status(self, address: str, job_id: str) -> str:
        return self.statuses.get(job_id, self.default_status)

    def list_jobs(self, address: str) -> list[tuple[str, str, str]]:
        return [(j, s, "python3 train.py") for j, s in self.statuses.items()]

    def jobs(self, address: str) -> list[JobInfo]:
        """The jobs of ``statuses``, with the times of ``times`` (job id -> (start, end))."""
        return [JobInfo(j, s, "python3 train.py", *self.times.get(j, (None, None))) for j, s in self.statuses.items()]


@dataclass
class FakeHostFacts:
    """This machine as the test describes it: its addresses, busy ports, port holders."""

    local: set[str] = field(default_factory=set)
    busy: set[tuple[str, int]] = field(default_factory=set)
    holders: dict[int, dict[str, Any]] = field(default_factory=dict)
    leftovers: bool = False

    def is_local_address(self, host: str) -> bool:
        return host in self.local

    def port_in_use(self, host: str, port: int, timeout_s: float = 1.0) -> bool:
        return (host, port) in self.busy

    def port_holders(self, port: int) -> dict[str, Any]:
        return self.holders.get(port, {"listeners": [], "holders": [], "error": "no LISTEN socket"})

    def resolve(self, host: str) -> set[str]:
        return {host}

    def ray_processes_left(self) -> bool:
        return self.leftovers


class RecordingReporter:
    """Keeps every message as ``(kind, text)``; tables as their rows."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.tables: list[tuple[str, list[Row]]] = []
        self.shown: list[Any] = []

    def phase(self, text: str) -> None:
        self.messages.append(("phase", text))

    def ok(self, text: str) -> None:
        self.messages.append(("ok", text))

    def warn(self, text: str) -> None:
        self.messages.append(("warn", text))

    def error(self, text: str) -> None:
        self.messages.append(("error", text))

    def line(self, source: str, text: str) -> None:
        self.messages.append(("line", f"[{source}] {text}"))

    def echo_for(self, source: str) -> Echo:
        return lambda text: self.line(source, text)

    def table(self, title: str, rows: Sequence[Row]) -> None:
        self.tables.append((title, list(rows)))

    def show(self, renderable: Any) -> None:
        self.shown.append(renderable)

    @contextmanager
    def progress(self, what: str, total: int) -> Iterator[Any]:
        yield _NoBar()

    def text(self, kind: str | None = None) -> str:
        return "\n".join(t for k, t in self.messages if kind is None or k == kind)


class _NoBar:
    def update(self, done: int, detail: str) -> None:
        pass


def fake_runtime(local: FakeLocalRunner | None = None, remote: FakeRemoteRunner | None = None,
                 ray: FakeRay | None = None, host: FakeHostFacts | None = None,
                 reporter: RecordingReporter | None = None, here: Sequence[str] = ()) -> Runtime:
    """A :class:`~glm45_launch.runtime.runtime.Runtime` of test doubles; ``here``: this machine's
    addresses (the head, usually)."""
    return Runtime(local or FakeLocalRunner(), remote or FakeRemoteRunner(), ray or FakeRay(),  # type: ignore[arg-type]
                   host or FakeHostFacts(local=set(here)), reporter or RecordingReporter())
