"""Held ssh sessions (``--hold-workers``): one per worker, from the join until the run ends.

A hold step's command blocks reading its session's stdin, which nothing writes: it ends when
its connection closes. The sessions have connections of their own (``connect``), closed when
the run (one attempt) ends, so a restart holds each worker once, not once more per attempt; and
they end when the launcher dies. A worker stays attached to the launcher while the job runs,
for platforms that reap a node whose entry process returns.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from glm45_launch.core.steps import Step
from glm45_launch.runtime.interfaces import RemoteRunner
from glm45_launch.runtime.results import FanOutResult
from glm45_launch.runtime.runtime import Runtime

HOLD_LIMIT_S = 30 * 24 * 3600.0  # as long as the job; the remote `timeout` wrapper needs a bound
DISPATCH_WAIT_S = 5.0


class HeldSessions:
    """Opens hold steps in the background (all at once), says which ended early, releases them."""

    def __init__(self, rt: Runtime, log_dir: Path, head: str) -> None:
        """The sessions get connections of their own (``rt.connect``), closed by :meth:`release`
        (without it they share ``rt.remote``'s and end when those close); logs in ``log_dir``."""
        self.rt, self.log_dir, self.head, self.report = rt, log_dir, head, rt.reporter
        self._own: list[RemoteRunner] = []
        self._ended: list[FanOutResult] = []

    def open(self, batch: Sequence[Step]) -> None:  # a step handler: nothing it does fails the launch
        """Send every hold step's command; return once each is on its way (the job starts next)."""
        self.report.phase(f"holding an ssh session open on {len(batch)} worker(s) until the job ends")
        remote = self.rt.fresh_remote()
        if remote is not self.rt.remote:
            self._own.append(remote)
        runner = self.rt.steps(self.log_dir, self.head, parallel=max(1, len(batch)), remote=remote)
        sent = threading.Semaphore(0)

        def hold() -> None:
            self._ended.append(runner.fan_out(batch, timeout_s=HOLD_LIMIT_S, on_dispatch=lambda _: sent.release()))

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

    def release(self) -> None:
        """The run is over: close the held sessions' own connections (their commands end)."""
        while self._own:
            self._own.pop().close_all()
