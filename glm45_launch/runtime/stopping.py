"""The one stop path: a failed launch, a fault, Ctrl-C or a signal, a stop request and a restart
all stop things here, in the same order.

1. the job, gracefully: the plan's ``ray job stop``, then wait (``--stop-grace``) until Ray says it
   is over or its follow command ended;
2. if it did not stop (or a second signal came): the launcher's own commands killed (its
   ``ray job submit``) and the forced stop (``Operations.force_stop``: ``ray stop --force``, and
   on a worker a ``ray start`` still running ended) on the hosts asked;
3. the forced stop on the hosts that must be stopped whatever the job did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from glm45_launch.core.operations import Operations
from glm45_launch.runtime.follow import JobFollower
from glm45_launch.runtime.records import RunRecords
from glm45_launch.runtime.results import FanOutResult
from glm45_launch.runtime.runtime import Runtime
from glm45_launch.runtime.signals import Signals

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
FOLLOWER_GRACE_S = 5.0  # a stopped job's `ray job submit` ends by itself within this, else it is killed
STOP_TIMEOUT_S = 60.0  # a forced stop's commands, per host
NAMED_HOSTS = 8  # more hosts than this in a message: their number


@dataclass
class StopOutcome:
    """What the stop did: the job stopped gracefully, or it forced; where Ray could not be stopped."""

    job_stopped: bool = False
    forced: bool = False
    failed: list[str] = field(default_factory=list)


class Stopper:
    """Stops one run's job and Ray, for the supervisor (and only there)."""

    def __init__(self, ops: Operations, rt: Runtime, records: RunRecords, signals: Signals | None = None,
                 head: str | None = None) -> None:
        self.ops, self.rt, self.records, self.signals, self.head = ops, rt, records, signals, head
        self.report = rt.reporter

    def stop(self, why: str, *, job: JobFollower | None = None, hosts: Sequence[str] = (),
             if_stuck: Sequence[str] = (), fresh: bool = False) -> StopOutcome:
        """Stop ``job`` gracefully (forced on ``if_stuck`` when it does not stop), then Ray on
        ``hosts``. ``fresh``: the run's SSH connections may be closed (Ctrl-C): use new ones."""
        out = StopOutcome()
        job_id = job.job_id if job else None
        if job_id and not (self.signals and self.signals.forced):
            try:
                out.job_stopped = self._graceful(job, job_id)  # type: ignore[arg-type]
            except KeyboardInterrupt:
                self.report.warn("a second signal: forcing the stop")
        if job_id and not out.job_stopped:
            out.forced = True
            self.report.warn(f"{why}: forcing (the launcher's commands killed"
                             + (", ray stop --force on every node this run started)" if if_stuck else ")"))
            self.records.event("force-stop", job_id=job_id, why=why)
            self.rt.local.kill_children()
        elif out.job_stopped and job is not None and not job.ended:
            # Stopped, but its `ray job submit` still tails the log: it ends (or is ended) now, before
            # a forced stop or the next attempt's cleanup takes the job server down under it (it
            # would die with a traceback of its own in the job's output).
            job.join(FOLLOWER_GRACE_S)
            if not job.ended:
                self.rt.local.kill_children()
        targets = list(dict.fromkeys([*hosts, *(if_stuck if out.forced else ())]))
        if targets:
            self.report.warn(f"stopping Ray on {self.named(targets)} ({why})")
            out.failed = sorted(self._force(targets, fresh).failed)
            self.records.event("stopped-ray", hosts=targets, failed=out.failed)
        if job_id:
            self.records.event("job-stopped", job_id=job_id, forced=out.forced)
        return out

    def _graceful(self, job: JobFollower, job_id: str) -> bool:
        if job.ended and self._over(job_id):
            return True  # it is over already: nothing to stop
        grace = self.ops.settings.stop_grace_s
        deadline = self.rt.clock() + grace
        self.report.warn(f"stopping job {job_id} (ray job stop; forced after {grace:.0f}s)")
        self.records.event("stop-sent", job_id=job_id)
        for step in self.ops.stop_job:
            for argv in step.for_job(job_id):
                self.rt.local.run(argv, job.log_path, self.report.echo_for("job"), timeout_s=grace)
        while True:
            if job.ended or self._over(job_id):
                self.report.warn(f"job {job_id} stopped")
                return True
            if self.rt.clock() >= deadline:
                return False
            job.join(0.5)

    def _over(self, job_id: str) -> bool:
        try:
            return self.rt.ray.job_status(self.ops.node_table, job_id) in TERMINAL
        except Exception:  # noqa: BLE001 - the job server may be down: wait for the follower or the grace
            return False

    def _force(self, hosts: Sequence[str], fresh: bool) -> FanOutResult:
        """``Operations.force_stop`` of ``hosts``, all at once; one line per host where Ray stayed."""
        remote = self.rt.fresh_remote() if fresh else self.rt.remote
        wanted = set(hosts)
        runner = self.rt.steps(self.records.run_dir / "stop", self.head, remote=remote)
        shield = self.signals.shield() if self.signals else contextlib.nullcontext()
        try:
            with shield:
                results = runner.run([s for s in self.ops.force_stop if s.host in wanted], timeout_s=STOP_TIMEOUT_S)
        finally:
            if remote is not self.rt.remote:
                remote.close_all()
        for host, res in results.failed.items():
            self.report.error(f"  could not stop Ray on {host}: {res.reason}")
        return results

    def named(self, hosts: Sequence[str]) -> str:
        """Hosts for a message: every node, a few by name, or how many (one line at rack scale)."""
        nodes = {s.host for s in self.ops.force_stop}
        if nodes and set(hosts) >= nodes:
            return "every node"
        return ", ".join(hosts) if len(hosts) <= NAMED_HOSTS else f"{len(hosts)} nodes"
