"""Run command steps: on the head here when it is this machine, on every other host over SSH,
all at once (bounded); one log per host.

The one place a step's commands meet the runners; every phase (launch, preflight, the health
watch, stopping, diagnostics, ``down``, ``status``, ``convert``) runs its steps through one,
made by :meth:`Runtime.steps <glm45_launch.runtime.runtime.Runtime.steps>`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from glm45_launch.core.quoting import shell_command
from glm45_launch.core.steps import DEFAULT_PARALLEL, HEAD, Step
from glm45_launch.runtime.fanout import run_on_hosts
from glm45_launch.runtime.interfaces import CommandRunner, Echo, RemoteRunner
from glm45_launch.runtime.results import CommandResult, FanOutResult


def log_name(host: str, head: str | None = None) -> str:
    """A host's log file name (without ``.log``): ``head`` for the head, else the host (``:`` -> ``_``)."""
    return "head" if head is not None and host == head else host.replace(":", "_")


class StepRunner:
    """Runs steps through the runners, logging each host to ``log_dir/<host>.log``.

    A head-side step (``where == HEAD``) runs here when ``head_here``; otherwise it goes over
    SSH to its host like any other step.
    """

    def __init__(self, local: CommandRunner, remote: RemoteRunner, log_dir: Path, *, head: str | None = None,
                 head_here: bool = True, parallel: int = DEFAULT_PARALLEL,
                 echo_for: Callable[[str], Echo] | None = None, suffix: str = ".log") -> None:
        self.local, self.remote, self.log_dir, self.suffix = local, remote, log_dir, suffix
        self.head, self.head_here = head, head_here
        self.parallel = parallel
        self.echo_for = echo_for

    def log_path(self, host: str) -> Path:
        return self.log_dir / f"{log_name(host, self.head)}{self.suffix}"

    def run(self, steps: Sequence[Step], timeout_s: float | None = None,
            on_dispatch: Callable[[str], None] | None = None) -> FanOutResult:
        """Every step at once: head-side ones here (each in its own thread), the others over SSH
        with at most ``parallel`` in flight. Results by host, head-side first."""
        here = [s for s in steps if self.runs_here(s)]
        far = [s for s in steps if not self.runs_here(s)]
        results: list[CommandResult | None] = [None] * len(here)

        def run_here(i: int, step: Step) -> None:
            results[i] = self.run_here(step, timeout_s)

        threads = [threading.Thread(target=run_here, args=(i, s), daemon=True) for i, s in enumerate(here)]
        for t in threads:
            t.start()
        remote = self.fan_out(far, timeout_s, on_dispatch) if far else FanOutResult()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        done = [r if r is not None else CommandResult(host=s.host, error="not run")
                for r, s in zip(results, here, strict=True)]
        return FanOutResult.of([*done, *remote.values()])

    def runs_here(self, step: Step) -> bool:
        return step.where == HEAD and self.head_here

    def run_here(self, step: Step, timeout_s: float | None = None) -> CommandResult:
        """A head-side step's commands in order, here; the first failure ends it unless the step
        ignores errors."""
        res = CommandResult(host=step.host, exit_code=0)
        for argv in step.commands:
            res = self.local.run(argv, self.log_path(step.host), self._echo(step.host), env=dict(step.env),
                                 cwd=step.cwd, timeout_s=timeout_s)
            res.host = step.host
            if not res.ok and not step.ignore_errors:
                break
        return res

    def fan_out(self, steps: Sequence[Step], timeout_s: float | None = None,
                on_dispatch: Callable[[str], None] | None = None) -> FanOutResult:
        """Steps over SSH: each step's ``remote_command`` on its host (a head-side step's cwd and
        env kept, when the head is not this machine)."""
        jobs = [(s.host, shell_command(s.commands, s.cwd, s.env) if s.where == HEAD and (s.cwd or s.env)
                 else s.remote_command) for s in steps]
        return run_on_hosts(self.remote, jobs, self.parallel, self.log_path, self._echo if self.echo_for else None,
                            timeout_s, on_dispatch=on_dispatch)

    def _echo(self, host: str) -> Echo | None:
        return self.echo_for("head" if host == self.head else host) if self.echo_for else None
