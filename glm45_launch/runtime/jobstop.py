"""Stopping a running job: the plan's ``ray job stop``, then, when the job has not ended
after a grace period, the forced stop: the launcher's ``ray job submit`` killed and
``ray stop --force`` on every node the run started (``Operations.force_stop``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from glm45_launch.core.operations import Operations
from glm45_launch.core.steps import Step
from glm45_launch.runtime.events import EventLog
from glm45_launch.runtime.interfaces import CommandRunner, RayQueries, Reporter
from glm45_launch.runtime.results import FanOutResult
from glm45_launch.runtime.steprunner import StepRunner

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STOP_TIMEOUT_S = 60.0


def stop_ray(steps: Sequence[Step], hosts: Iterable[str], runner: StepRunner, reporter: Reporter,
             timeout_s: float = STOP_TIMEOUT_S) -> FanOutResult:
    """The teardown steps (``plan.on_failure`` or ``Operations.force_stop``) of ``hosts``, all at
    once; one error line per host where Ray could not be stopped."""
    wanted = set(hosts)
    results = runner.run([s for s in steps if s.host in wanted], timeout_s=timeout_s)
    for host, res in results.failed.items():
        reporter.error(f"  could not stop Ray on {host}: {res.reason}")
    return results


class JobStopper:
    """Stops one job, gracefully first; says whether it had to force."""

    def __init__(self, ops: Operations, *, local: CommandRunner, steps: StepRunner, ray: RayQueries,
                 reporter: Reporter, log_path: Path, events: EventLog) -> None:
        self.ops, self.local, self.steps, self.ray = ops, local, steps, ray
        self.report, self.log_path, self.events = reporter, log_path, events

    def stop(self, job_id: str | None, ended: threading.Event, hosts: Callable[[], Iterable[str]]) -> bool:
        """``ray job stop JOB``; wait until ``ended`` is set (the submit returned) or Ray says the
        job is over, at most the grace period; else force. True when it forced."""
        grace = self.ops.settings.stop_grace_s
        deadline = time.monotonic() + grace
        if job_id:
            self.report.warn(f"stopping job {job_id} (ray job stop; forced after {grace:.0f}s)")
            self.events.add("stop-sent", job_id=job_id)
            for step in self.ops.stop_job:
                for argv in step.for_job(job_id):
                    self.local.run(argv, self.log_path, self.report.echo_for("job"), timeout_s=grace)
        while True:
            if ended.is_set() or (job_id and self._over(job_id)):
                self.events.add("job-stopped", job_id=job_id, forced=False)
                self.report.warn(f"job {job_id or '?'} stopped")
                return False
            if time.monotonic() >= deadline:
                break
            ended.wait(0.5)
        self.force(job_id, hosts(), f"the job did not stop within {grace:.0f}s")
        return True

    def force(self, job_id: str | None, hosts: Iterable[str], why: str) -> None:
        """The launcher's commands killed, then ``ray stop --force`` on ``hosts``."""
        self.report.warn(f"{why}: forcing (ray stop --force on every node this run started)")
        self.events.add("force-stop", job_id=job_id, why=why)
        self.local.kill_children()
        stop_ray(self.ops.force_stop, hosts, self.steps, self.report)
        self.events.add("job-stopped", job_id=job_id, forced=True)

    def _over(self, job_id: str) -> bool:
        try:
            return self.ray.job_status(self.ops.node_table, job_id) in TERMINAL
        except Exception:  # noqa: BLE001 - the job server may be down: wait for the submit or the grace
            return False
