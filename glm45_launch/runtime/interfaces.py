"""The side effects a plan's execution needs, each behind one small interface.

The executor and the use cases take these injected (like invoke's runners or Ray's
``CommandRunnerInterface``): the real implementations are :class:`~.local.LocalRunner`,
:class:`~.ssh.SshRunner`, :class:`~.ray_api.RayClient`, :class:`~.hostfacts.LocalHostFacts`
and :class:`~.reporter.RichReporter`; the test doubles live in
:mod:`glm45_launch.testing.fakes`. ``tests/test_architecture.py`` checks that every real
implementation has exactly its interface's public methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from glm45_launch.runtime.results import CommandResult

Echo = Callable[[str], None]


class CommandRunner(Protocol):
    """Runs argv here, on the head (the machine the launcher runs on)."""

    def run(self, argv: Sequence[str], log_path: Path, echo: Echo | None = None,
            env: Mapping[str, str] | None = None, cwd: str | None = None, timeout_s: float | None = None,
            on_line: Echo | None = None) -> CommandResult: ...

    def pkill_sparing(self, argv: Sequence[str], log_path: Path, spare: set[int]) -> CommandResult: ...

    def kill_children(self) -> list[int]: ...


class RemoteRunner(Protocol):
    """Runs one shell command string on one host (over SSH)."""

    def run(self, host: str, command: str, log_path: Path, echo: Echo | None = None,
            timeout_s: float | None = None) -> CommandResult: ...

    def close_all(self) -> None: ...


@dataclass(frozen=True)
class NodeInfo:
    """One node of Ray's node table."""

    ip: str
    alive: bool
    gpus: float
    is_head: bool


@dataclass(frozen=True)
class JobInfo:
    """One job the cluster knows: its state and when it ran (seconds since the epoch)."""

    job_id: str
    status: str
    entrypoint: str
    start_time: float | None = None
    end_time: float | None = None

    def runtime_s(self, now: float) -> float | None:
        """How long it ran (or has been running, at ``now``)."""
        if self.start_time is None:
            return None
        return max(0.0, (self.end_time or now) - self.start_time)


class RayQueries(Protocol):
    """Questions asked of a Ray cluster through its job server address."""

    def nodes(self, address: str) -> list[NodeInfo]: ...

    def job_status(self, address: str, job_id: str) -> str: ...

    def list_jobs(self, address: str) -> list[tuple[str, str, str]]: ...

    def jobs(self, address: str) -> list[JobInfo]: ...


class HostFacts(Protocol):
    """Facts about this machine: its addresses, its ports and what holds them, its processes."""

    def is_local_address(self, host: str) -> bool: ...

    def port_in_use(self, host: str, port: int, timeout_s: float = 1.0) -> bool: ...

    def port_holders(self, port: int) -> dict[str, Any]: ...

    def resolve(self, host: str) -> set[str]: ...

    def ray_processes_left(self) -> bool: ...


@dataclass(frozen=True)
class Row:
    """One row of a run's outcome table."""

    host: str
    what: str
    exit_code: int | None
    duration_s: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    @classmethod
    def of(cls, host: str, what: str, res: CommandResult, duration_s: float | None = None) -> Row:
        """The row for a command's result: a non-zero exit is an error of its own."""
        error = res.error or (None if res.ok else f"exit {res.exit_code}")
        return cls(host, what, res.exit_code, res.duration_s if duration_s is None else duration_s, error)


class Progress(Protocol):
    def update(self, done: int, detail: str) -> None: ...


class Reporter(Protocol):
    """Where a run tells the user what happens (the executor never prints)."""

    def phase(self, text: str) -> None: ...

    def ok(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...

    def line(self, source: str, text: str) -> None: ...

    def echo_for(self, source: str) -> Echo: ...

    def table(self, title: str, rows: Sequence[Row]) -> None: ...

    def show(self, renderable: Any) -> None: ...

    def progress(self, what: str, total: int) -> Any: ...
