"""Run command steps: head-side ones here, worker ones over SSH, all at once (bounded).

The one place a step's commands meet the runners; the executor, preflight, ``down``,
``status`` and ``convert`` all run their steps through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from glm45_launch.core.steps import DEFAULT_PARALLEL, HEAD, Step
from glm45_launch.runtime.fanout import run_on_hosts
from glm45_launch.runtime.interfaces import CommandRunner, Echo, RemoteRunner
from glm45_launch.runtime.results import CommandResult, FanOutResult


class StepRunner:
    """Runs steps through the injected runners, logging each host to ``log_path(host)``."""

    def __init__(
        self,
        local: CommandRunner,
        remote: RemoteRunner,
        log_path: Callable[[str], Path],
        parallel: int = DEFAULT_PARALLEL,
        echo_for: Callable[[str], Echo] | None = None,
    ) -> None:
        self.local, self.remote, self.log_path = local, remote, log_path
        self.parallel = parallel
        self.echo_for = echo_for

    def run(self, steps: Sequence[Step], timeout_s: float | None = None, echo: bool = False,
            on_dispatch: Callable[[str], None] | None = None) -> FanOutResult:
        """Every step at once: head-side ones here (each in its own thread), the others over SSH
        with at most ``parallel`` in flight. Results by host, head-side first."""
        here = [s for s in steps if s.where == HEAD]
        remote = [s for s in steps if s.where != HEAD]
        results: list[CommandResult | None] = [None] * len(here)

        def run_here(i: int, step: Step) -> None:
            results[i] = self.run_here(step, timeout_s, echo)

        threads = [threading.Thread(target=run_here, args=(i, s), daemon=True) for i, s in enumerate(here)]
        for t in threads:
            t.start()
        far = self.fan_out(remote, timeout_s, echo, on_dispatch) if remote else FanOutResult()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        done = [r if r is not None else CommandResult(host=s.host, error="not run") for r, s in zip(results, here,
                                                                                                     strict=True)]
        return FanOutResult.of([*done, *far.values()])

    def run_here(self, step: Step, timeout_s: float | None = None, echo: bool = True) -> CommandResult:
        """A head-side step's commands in order, here; the first failure ends it unless the step
        ignores errors."""
        res = CommandResult(host=step.host, exit_code=0)
        for argv in step.commands:
            res = self.local.run(argv, self.log_path(step.host), self._echo(step.host) if echo else None,
                                 env=dict(step.env), cwd=step.cwd, timeout_s=timeout_s)
            res.host = step.host
            if not res.ok and not step.ignore_errors:
                break
        return res

    def fan_out(self, steps: Sequence[Step], timeout_s: float | None = None, echo: bool = True,
                on_dispatch: Callable[[str], None] | None = None) -> FanOutResult:
        """Worker steps over SSH: each step's ``remote_command`` on its host."""
        jobs = [(s.host, s.remote_command) for s in steps]
        return run_on_hosts(self.remote, jobs, self.parallel, self.log_path,
                            self._echo if echo and self.echo_for else None, timeout_s, on_dispatch=on_dispatch)

    def _echo(self, host: str) -> Echo | None:
        return self.echo_for(host) if self.echo_for else None
