"""The composition root: every side effect a use case may cause, built once and passed whole.

Like httpie's ``Environment``: the CLI (or a team's own launcher) builds one :class:`Runtime`
and hands it to a use case; nothing below rebuilds a default or takes it apart into keyword
lists. Tests build one from :mod:`glm45_launch.testing.fakes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glm45_launch.core.steps import DEFAULT_PARALLEL
from glm45_launch.runtime.interfaces import (
    CommandRunner,
    HostFacts,
    NodeInfo,
    RayQueries,
    RemoteRunner,
    Reporter,
)
from glm45_launch.runtime.steprunner import StepRunner

if TYPE_CHECKING:
    from glm45_launch.runtime.ssh import SshOptions


@dataclass
class Runtime:
    """This machine (``local``, ``host``), the other hosts (``remote``), the cluster (``ray``),
    the user (``reporter``) and the time (``clock``)."""

    local: CommandRunner
    remote: RemoteRunner
    ray: RayQueries
    host: HostFacts
    reporter: Reporter
    # A RemoteRunner with connections of its own: held sessions that end with their attempt, and a
    # teardown after Ctrl-C closed ``remote``'s connections (None: ``remote`` is reused).
    connect: Callable[[], RemoteRunner] | None = None
    clock: Callable[[], float] = time.monotonic
    parallel: int = DEFAULT_PARALLEL  # commands in flight at once in a fan-out
    _here: dict[str, bool] = field(default_factory=dict, repr=False)
    _addrs: dict[str, set[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def real(cls, ssh: SshOptions, *, quiet: bool = False, mask: Callable[[str], str] | None = None,
             parallel: int = DEFAULT_PARALLEL) -> Runtime:
        """This machine, SSH (one connection per host for the whole run), Ray's SDK and rich on
        stderr; ``mask`` hides secrets in what is logged and shown."""
        from glm45_launch.runtime.hostfacts import LocalHostFacts
        from glm45_launch.runtime.local import LocalRunner
        from glm45_launch.runtime.ray_api import RayClient
        from glm45_launch.runtime.reporter import RichReporter
        from glm45_launch.runtime.ssh import SshRunner

        reporter = RichReporter(quiet)
        remote = SshRunner(ssh)  # the run's one known_hosts index, shared with the runners `connect` makes
        return cls(LocalRunner(mask=mask, warn=reporter.warn), remote, RayClient(), LocalHostFacts(),
                   reporter, connect=lambda: SshRunner(ssh, like=remote), parallel=parallel)

    def here(self, host: str) -> bool:
        """Is ``host`` this machine? (asked once per host: the answer reads /proc)."""
        if host not in self._here:
            self._here[host] = self.host.is_local_address(host)
        return self._here[host]

    def nodes_of(self, host: str, nodes: Iterable[NodeInfo]) -> list[NodeInfo]:
        """The entries of Ray's node table that are ``host``: by the addresses it resolves to
        (once per host), and for this machine by any of its addresses (Ray registers a head
        started with ``--node-ip-address 127.0.0.1`` under the machine's own address)."""
        if host not in self._addrs:
            self._addrs[host] = self.host.resolve(host)
        addrs, here = self._addrs[host], self.here(host)
        return [n for n in nodes if n.ip in addrs or (here and self.here(n.ip))]

    def missing(self, hosts: Iterable[str], nodes: Sequence[NodeInfo]) -> list[str]:
        """``hosts`` with no ALIVE node in ``nodes``."""
        return [h for h in hosts if not any(n.alive for n in self.nodes_of(h, nodes))]

    def head_of(self, hosts: Sequence[str], head: str | None = None) -> str | None:
        """The head among ``hosts`` for a command that takes no plan (``down``, ``status``):
        ``head`` when given, else the first host that is this machine (None: none is)."""
        return head or next((h for h in hosts if self.here(h)), None)

    def steps(self, log_dir: Path, head: str | None = None, *, parallel: int | None = None,
              echo: bool = False, remote: RemoteRunner | None = None, suffix: str = ".log",
              head_here: bool | None = None) -> StepRunner:
        """A phase's step runner: host logs in ``log_dir``; the head runs here when it is this
        machine, every other host over SSH (the one rule of every command; ``head_here`` only
        where the plan already decided it, as preflight's does)."""
        if head_here is None:
            head_here = bool(head) and self.here(head or "")
        return StepRunner(self.local, remote or self.remote, log_dir, head=head,
                          head_here=head_here, parallel=parallel or self.parallel,
                          echo_for=self.reporter.echo_for if echo else None, suffix=suffix)

    def fresh_remote(self) -> RemoteRunner:
        """A RemoteRunner with connections of its own (``remote`` itself when none can be made)."""
        return self.connect() if self.connect is not None else self.remote

    def close(self) -> None:
        """Close the run's SSH connections (the CLI's process exit does it too)."""
        self.remote.close_all()
