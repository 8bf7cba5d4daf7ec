"""Held ssh sessions (``--hold-workers``): one per worker, from the join until the run ends.

A hold step's command blocks reading its session's stdin, which nothing writes: it ends when
the run's connections close (the launcher exits, or the runtime's ``RemoteRunner`` is closed),
so a worker stays attached to the launcher for as long as the job runs, and is released even
when the launcher dies. For platforms that reap a node whose entry process returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from glm45_launch.core.steps import Step
from glm45_launch.runtime.interfaces import CommandRunner, RemoteRunner, Reporter
from glm45_launch.runtime.results import FanOutResult
from glm45_launch.runtime.steprunner import StepRunner

HOLD_LIMIT_S = 30 * 24 * 3600.0  # as long as the job; the remote `timeout` wrapper needs a bound
DISPATCH_WAIT_S = 5.0


class HeldSessions:
    """Opens hold steps in the background (all at once) and says which ended early."""

    def __init__(self, local: CommandRunner, remote: RemoteRunner, log_path: Callable[[str], Path],
                 reporter: Reporter) -> None:
        self.local, self.remote, self.log_path, self.report = local, remote, log_path, reporter
        self._ended: list[FanOutResult] = []

    def open(self, batch: Sequence[Step]) -> None:
        """Send every hold step's command; return once each is on its way (the job starts next)."""
        self.report.phase(f"holding an ssh session open on {len(batch)} worker(s) until the job ends")
        runner = StepRunner(self.local, self.remote, self.log_path, max(1, len(batch)))
        sent = threading.Semaphore(0)

        def hold() -> None:
            self._ended.append(runner.fan_out(batch, timeout_s=HOLD_LIMIT_S, echo=False,
                                              on_dispatch=lambda _: sent.release()))

        threading.Thread(target=hold, name="hold-workers", daemon=True).start()  # never waited for
        for _ in batch:
            sent.acquire(timeout=DISPATCH_WAIT_S)

    def report_early_ends(self) -> None:
        """At the end of the run: a session that already ended left its node unheld during the job."""
        for result in self._ended:
            for host, res in result.items():
                self.report.warn(f"{host}: the held ssh session ended before the job did "
                                 f"({res.reason or f'exit {res.exit_code}'})")
        self._ended.clear()
