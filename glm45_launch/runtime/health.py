"""The health watch: while the job runs, is every node still there and is the job still talking?

Every ``interval_s`` it reads Ray's node table and runs each node's health check (the plan's
``pgrep -x raylet``: the head here, the others over SSH, each in its own thread so a hung host
never delays the others). A node is lost when:

* its check finds no raylet (exit 1), or Ray's node table has it DEAD or not at all: at once;
* it cannot be reached or does not answer within ``probe_timeout_s``, ``unreachable_after``
  times in a row (one SSH hiccup is not a lost node).

With ``stall_timeout_s``, no new driver output for that long is a stall. The first fault
ends the watch: it names the node and what it saw, and stops the job (:class:`JobStopper`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from glm45_launch.core.operations import Operations
from glm45_launch.core.steps import HEAD, HealthCheckStep
from glm45_launch.runtime.causes import NODE_LOST, STALLED, Cause, exc_line
from glm45_launch.runtime.events import EventLog
from glm45_launch.runtime.interfaces import CommandRunner, HostFacts, RayQueries, RemoteRunner, Reporter
from glm45_launch.runtime.jobstop import JobStopper
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.steprunner import StepRunner

NODE_TABLE_WARN_AFTER = 3  # failed reads of Ray's node table in a row before a warning
SLACK = 0.02  # of a probe timeout: a check that late counts as one timeout late


class _Probe:
    """One node's health check state: the check in flight, and unreachable strikes."""

    def __init__(self, step: HealthCheckStep) -> None:
        self.step = step
        self.since: float | None = None  # when the check in flight started
        self.result: CommandResult | None = None  # the last finished check, not yet judged
        self.strikes = 0
        self.struck = 0  # strikes the check in flight already counted (one per timeout it is late)
        self.last_problem = ""
        self.outcome = ""  # the last outcome written to health.log
        self.warned = False


class HealthWatch:
    """Watches the cluster in a daemon thread from :meth:`start` until :meth:`close`."""

    def __init__(self, ops: Operations, *, local: CommandRunner, remote: RemoteRunner, ray: RayQueries,
                 host: HostFacts, reporter: Reporter, run_dir: Path, events: EventLog, stopper: JobStopper,
                 job_id: Callable[[], str | None], started: Callable[[], Iterable[str]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ops, self.s = ops, ops.settings
        self.local, self.remote, self.ray, self.host, self.report = local, remote, ray, host, reporter
        self.run_dir, self.events, self.stopper = run_dir, events, stopper
        self.job_id, self.started, self.clock = job_id, started, clock
        self.verdict: Cause | None = None
        self.forced = False
        self.ended = threading.Event()  # the job's submit returned
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._probes = {s.host: _Probe(s) for s in ops.health}
        self._addrs: dict[str, set[str]] = {}  # each node's addresses, resolved once (the watch runs for days)
        self._last_output = clock()
        self._table_failures = 0
        self._thread: threading.Thread | None = None

    # -- the executor's side ------------------------------------------------------------------
    def start(self) -> HealthWatch:
        self._last_output = self.clock()
        self._thread = threading.Thread(target=self._loop, name="health-watch", daemon=True)
        self._thread.start()
        return self

    def output_seen(self) -> None:
        """A line of driver output arrived (the stall clock restarts)."""
        self._last_output = self.clock()

    def close(self, job_ended: bool = True) -> None:
        """Stop watching; when a fault was seen, wait for its stop sequence to finish."""
        if job_ended:
            self.ended.set()
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(0.2)

    # -- the watch ------------------------------------------------------------------------------
    def _loop(self) -> None:
        next_round = self.clock() + self.s.interval_s
        while not self._closed.is_set():
            # A finished check that failed wakes the watch at once; otherwise one round per interval.
            self._wake.wait(max(0.0, next_round - self.clock()))
            self._wake.clear()
            if self._closed.is_set():
                return
            new_round = self.clock() >= next_round
            if new_round:
                next_round = self.clock() + self.s.interval_s
            cause = self.check(new_round)
            if cause is not None and not self._closed.is_set():
                self._fault(cause)
                return

    def check(self, new_round: bool = True) -> Cause | None:
        """Stall, finished health checks, and (a new round) the node table and new checks:
        the first fault found, else None."""
        if self.s.stall_timeout_s is not None:
            quiet = self.clock() - self._last_output
            if quiet >= self.s.stall_timeout_s:
                return Cause(STALLED, f"no driver output for {quiet:.0f}s (--stall-timeout {self.s.stall_timeout_s:g})")
        cause = self._judge_checks(new_round)
        if cause is None and new_round:
            cause = self._read_node_table()
        return cause

    def _judge_checks(self, new_round: bool) -> Cause | None:
        now = self.clock()
        for probe in self._probes.values():
            with self._lock:
                res, since = probe.result, probe.since
                probe.result = None
            if res is not None:
                cause = self._judge(probe, res)
                if cause is not None:
                    return cause
            elif since is not None and new_round:
                # One strike per timeout in flight; rounds and launches share one clock, so a check
                # launched one round ago is compared with a little slack for the round's own jitter.
                due = int((now - since) / self.s.probe_timeout_s + SLACK)
                if due > probe.struck:
                    probe.strikes += due - probe.struck
                    probe.struck = due
                    self._strike(probe, f"no answer to the health check within {self.s.probe_timeout_s:g}s")
            if probe.strikes >= self.s.unreachable_after:
                return Cause(NODE_LOST, f"unreachable: {probe.last_problem} ({probe.strikes} checks in a row)",
                             probe.step.host)
            if since is None and new_round:
                self._launch(probe)
        return None

    def _judge(self, probe: _Probe, res: CommandResult) -> Cause | None:
        host = probe.step.host
        if res.exit_code == 0:
            if probe.strikes:
                self.report.warn(f"{host}: health check answers again")
            probe.strikes = 0
            self._note(probe, "ok")
        elif res.exit_code == 1:
            self._note(probe, "no raylet")
            return Cause(NODE_LOST, "raylet not running (pgrep -x raylet found none)", host)
        elif res.exit_code is None or res.exit_code in (124, 137, 255):  # no connection, timed out
            probe.strikes += 0 if probe.struck else 1
            self._strike(probe, res.error or f"exit {res.exit_code}")
        elif not probe.warned:  # e.g. 127: no pgrep there; the node table still watches it
            probe.warned = True
            self._note(probe, f"cannot check: {res.reason}")
            self.report.warn(f"health check on {host} cannot run ({res.reason}): relying on Ray's node table")
        return None

    def _strike(self, probe: _Probe, problem: str) -> None:
        """A check that failed to reach its node: said once per streak, logged."""
        probe.last_problem = problem
        self._note(probe, f"unreachable: {problem}")
        if probe.strikes == 1 and self.s.unreachable_after > 1:
            self.report.warn(f"{probe.step.host}: health check failed ({problem}); lost after "
                             f"{self.s.unreachable_after} in a row")

    def _note(self, probe: _Probe, outcome: str) -> None:
        """``health.log``: one line per change of a node's check outcome (a week of checks stays small)."""
        if outcome == probe.outcome:
            return
        probe.outcome = outcome
        try:
            with (self.run_dir / "health.log").open("a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {probe.step.host} {outcome}\n")
        except OSError:
            pass

    def _launch(self, probe: _Probe) -> None:
        probe.since, probe.struck = self.clock(), 0
        threading.Thread(target=self._run_check, args=(probe,), daemon=True).start()

    def _run_check(self, probe: _Probe) -> None:
        step = probe.step
        log = Path(os.devnull)  # every check would be a line: health.log keeps the changes instead
        timeout = self.s.probe_timeout_s
        try:
            if step.where == HEAD:
                res = self.local.run(step.commands[0], log, timeout_s=timeout)
            else:
                res = self.remote.run(step.host, step.remote_command, log, timeout_s=timeout)
        except Exception as exc:  # noqa: BLE001 - a broken check is an unreachable node, not a crash
            res = CommandResult(host=step.host, error=exc_line(exc))
        with self._lock:
            probe.result, probe.since = res, None
        if not res.ok:
            self._wake.set()

    def _read_node_table(self) -> Cause | None:
        try:
            nodes = self.ray.nodes(self.ops.node_table)
        except Exception as exc:  # noqa: BLE001 - the dashboard may be busy; the checks still run
            self._table_failures += 1
            if self._table_failures == NODE_TABLE_WARN_AFTER:
                self.report.warn(f"cannot read Ray's node table at {self.ops.node_table}: {exc_line(exc, 160)}")
            return None
        self._table_failures = 0
        for host in self._probes:
            addrs = self._addrs.get(host) or self._addrs.setdefault(host, self.host.resolve(host))
            mine = [n for n in nodes if n.ip in addrs]
            if not any(n.alive for n in mine):
                seen = "DEAD in Ray's node table" if mine else "not in Ray's node table"
                return Cause(NODE_LOST, seen, host)
        return None

    def _fault(self, cause: Cause) -> None:
        self.verdict = cause
        job_id = self.job_id()
        self.report.error(f"{cause}" + (f": stopping job {job_id}" if job_id else ""))
        self.events.add("fault-detected", **cause.to_json(), job_id=job_id)
        self.forced = self.stopper.stop(job_id, self.ended, self.started)


def start_watch(ops: Operations, *, local: CommandRunner, remote: RemoteRunner, ray: RayQueries, host: HostFacts,
                reporter: Reporter, steps: StepRunner, run_dir: Path, job_id: Callable[[], str | None],
                started: Callable[[], Iterable[str]]) -> HealthWatch:
    """A started watch over the job (its fault stops the job through a :class:`JobStopper`)."""
    events = EventLog(run_dir / "events.jsonl")
    stopper = JobStopper(ops, local=local, steps=steps, ray=ray, reporter=reporter, log_path=run_dir / "job.log",
                         events=events)
    s = ops.settings
    stall = f"; stalled after {s.stall_timeout_s:g}s without driver output" if s.stall_timeout_s else ""
    reporter.phase(f"watching {len(ops.health)} node(s) every {s.interval_s:g}s (pgrep -x raylet, "
                   f"Ray's node table){stall}")
    return HealthWatch(ops, local=local, remote=remote, ray=ray, host=host, reporter=reporter, run_dir=run_dir,
                       events=events, stopper=stopper, job_id=job_id, started=started).start()
