"""Running the job until it succeeds: attempts, restarts after a failure, what each one did.

Attempt 1 is ``plan.steps`` run by the executor, with the health watch. After a failure
(a node lost, a stall, the job failed, or a restart's own launch failing) the diagnostics are
collected; then, with restarts left, every node must answer its health check again (a lost
node has up to ``--host-wait`` to come back) and ``plan.steps`` run again: the cleanup stops
what is left, the cluster starts and the same job is submitted; the trainer resumes from
``--load``. Each attempt is logged with its cause, the iteration it resumed from
(``latest_checkpointed_iteration.txt``) and its duration, in ``attempts.json`` too.

A job stopped by someone (``glm45-launch stop``) is never restarted, nor is Ctrl-C. Ctrl-C
before the job has an id (the cleanup, the starts, the join, the submit) stops Ray where the
attempt started it or sent a start, so nothing is left half-started; with restarts on, Ctrl-C
stops Ray on every node, so nothing is left running. Only Ctrl-C while the job runs, without
restarts, leaves the cluster up (the job itself is stopped; ``glm45-launch down`` stops Ray).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glm45_launch.core.operations import LATEST_ITERATION, Operations
from glm45_launch.core.plan import Plan
from glm45_launch.errors import ExitCode, LaunchError
from glm45_launch.runtime.causes import HOST_GONE, JOB_STOPPED, LAUNCH_FAILED, Cause
from glm45_launch.runtime.diagnostics import collect
from glm45_launch.runtime.events import EventLog
from glm45_launch.runtime.executor import ExecOptions, Executor, UpResult
from glm45_launch.runtime.interfaces import Row
from glm45_launch.runtime.jobstop import stop_ray
from glm45_launch.runtime.steprunner import StepRunner

if TYPE_CHECKING:
    from glm45_launch.runtime.usecases import Runtime

NAMED_HOSTS = 8  # more hosts than this in a message: their number


def read_iteration(checkpoint_dir: str | None) -> str | None:
    """What ``latest_checkpointed_iteration.txt`` in ``checkpoint_dir`` says (None: no checkpoint)."""
    if not checkpoint_dir:
        return None
    try:
        text = (Path(checkpoint_dir) / LATEST_ITERATION).read_text(errors="replace")[:64].strip()
    except OSError:
        return None
    return text or None


def resumed_text(iteration: str | None) -> str:
    return f"iteration {iteration}" if iteration else "the start (no checkpoint)"


@dataclass
class Attempt:
    """One run of ``plan.steps`` and the job."""

    number: int
    why: str  # "first attempt", or the failure it restarts after
    resumed_from: str | None
    started_at: float
    duration_s: float = 0.0
    job_id: str | None = None
    status: str | None = None
    outcome: str = "running"  # "succeeded", "interrupted", or the failure

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__, duration_s=round(self.duration_s, 1))


class Supervisor:
    """Runs attempts of one plan until one succeeds, restarts run out, or the user stops it."""

    def __init__(self, plan: Plan, ops: Operations, opts: ExecOptions, rt: Runtime) -> None:
        self.plan, self.ops, self.rt = plan, ops, rt
        self.opts = replace(opts, ops=ops)
        self.run_dir = opts.run_dir
        self.events = EventLog(self.run_dir / "events.jsonl")
        self.attempts: list[Attempt] = []
        self.executor: Executor | None = None

    @property
    def max_restarts(self) -> int:
        return self.ops.settings.max_restarts

    def run(self) -> UpResult:
        why = "first attempt"
        lost: list[str] = []
        try:
            while True:
                n = len(self.attempts) + 1
                if n > 1:
                    self._wait_for_nodes(lost, why)
                result = self._attempt(n, why)
                cause = result.cause
                if result.exit_code in (ExitCode.OK, ExitCode.INTERRUPTED) or cause is None:
                    if result.exit_code == ExitCode.INTERRUPTED:
                        self._after_ctrl_c(result)
                    return self._done(result)
                if cause.kind != JOB_STOPPED and self.ops.settings.collect:
                    self._collect(n, result.job_id)
                if not cause.restartable:
                    return self._done(result)
                if n > self.max_restarts:
                    return self._give_up(result, cause)
                lost = [cause.host] if cause.host else []
                why = f"restart {n} of {self.max_restarts} after {cause}"
        except KeyboardInterrupt:
            self.rt.reporter.error("interrupted: no restart")
            self.rt.local.kill_children()
            self._force_stop(self.plan.cluster.nodes, "Ctrl-C: no restart, nothing left running")
            return self._done(UpResult(ExitCode.INTERRUPTED, rows=[]))

    # -- one attempt ----------------------------------------------------------------------------
    def _attempt(self, n: int, why: str) -> UpResult:
        resumed = read_iteration(self.ops.checkpoint_dir)
        attempt = Attempt(n, why, resumed, time.time())
        self.attempts.append(attempt)
        if self.max_restarts:
            self.rt.reporter.phase(f"attempt {n} of at most {self.max_restarts + 1} ({why}): "
                                   f"resuming from {resumed_text(resumed)}")
        self.events.add("attempt-start", attempt=n, why=why, resumed_from=resumed)
        rt = self.rt
        self.executor = Executor(self.plan, self.opts, local=rt.local, remote=rt.remote, ray=rt.ray, host=rt.host,
                                 reporter=rt.reporter, connect=rt.reconnect)
        start = time.monotonic()
        try:
            result = self.executor.up()
        except LaunchError as exc:
            # The first launch fails fast (a setup problem, with the user watching); a restart's
            # launch failing is one more failed attempt.
            if n == 1 or exc.exit_code != ExitCode.FAILED:
                self._record(attempt, start, None, str(exc))
                raise
            result = UpResult(ExitCode.FAILED, self.executor.job_id, rows=self.executor.rows,
                              cause=Cause(LAUNCH_FAILED, str(exc)))
        outcome = {ExitCode.OK: "succeeded", ExitCode.INTERRUPTED: "interrupted"}.get(
            ExitCode(result.exit_code), str(result.cause or f"exit {result.exit_code}"))
        self._record(attempt, start, result, outcome)
        return result

    def _record(self, attempt: Attempt, start: float, result: UpResult | None, outcome: str) -> None:
        attempt.duration_s = time.monotonic() - start
        attempt.outcome = outcome
        if result is not None:
            attempt.job_id, attempt.status = result.job_id, result.job_status
        self.events.add("attempt-end", attempt=attempt.number, outcome=outcome, job_id=attempt.job_id,
                        duration_s=round(attempt.duration_s, 1))
        if self.max_restarts or attempt.number > 1:
            say = self.rt.reporter.ok if outcome == "succeeded" else self.rt.reporter.warn
            say(f"attempt {attempt.number}: {outcome} after {attempt.duration_s:.0f}s; "
                f"it resumed from {resumed_text(attempt.resumed_from)}")
        (self.run_dir / "attempts.json").write_text(json.dumps([a.to_json() for a in self.attempts], indent=2))

    # -- between attempts -----------------------------------------------------------------------
    def _collect(self, n: int, job_id: str | None) -> None:
        rt = self.rt
        collect(self.ops, self.run_dir / "diagnostics" / f"attempt-{n}", job_id, local=rt.local, remote=rt.remote,
                reporter=rt.reporter, parallel=self.opts.parallel, head=self.plan.head)

    def _wait_for_nodes(self, lost: list[str], why: str) -> None:
        """Every node must answer its health check (reachable again); a lost one gets --host-wait."""
        wait_s = self.ops.settings.host_wait_s
        pending = list(self.plan.cluster.nodes)
        if lost:
            self.rt.reporter.phase(f"waiting for {', '.join(lost)} to come back (at most {wait_s:.0f}s)")
        deadline = time.monotonic() + wait_s
        runner = StepRunner(self.rt.local, self.rt.remote, lambda h: self.run_dir / "health" / f"{h.replace(':', '_')}.log",
                            self.opts.parallel)
        first = time.monotonic()
        while True:
            timeout = max(1.0, min(self.ops.settings.probe_timeout_s, deadline - time.monotonic()))
            results = runner.run(self.ops.health_for(pending), timeout_s=timeout)
            pending = [h for h in pending if results[h].exit_code is None]
            if not pending:
                if lost:
                    self.rt.reporter.ok(f"{', '.join(lost)} answers again after {time.monotonic() - first:.0f}s")
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        reasons = "; ".join(f"{h}: {results[h].reason}" for h in pending)
        cause = Cause(HOST_GONE, f"did not come back within {wait_s:.0f}s ({reasons})", ", ".join(pending))
        self.events.add("gave-up", **cause.to_json())
        self._table()
        raise LaunchError(f"{cause}; not restarting (after {why}); diagnostics in {self.run_dir / 'diagnostics'}",
                          exit_code=ExitCode.FAILED)

    def _after_ctrl_c(self, result: UpResult) -> None:
        """Ctrl-C in an attempt: with restarts on, Ray stopped on every node; before the job had
        an id, where the attempt started it; while the job ran (stopped by the executor), kept."""
        if self.max_restarts:
            self._force_stop(self.plan.cluster.nodes, "Ctrl-C: no restart, nothing left running")
        elif result.job_id is None:
            self._force_stop(result.started, "Ctrl-C before the job: nothing left half-started")
        elif result.started:
            self.rt.reporter.warn(f"Ray is still running on {self._named(result.started)} "
                                  "(`glm45-launch down` stops it)")

    def _force_stop(self, hosts: Sequence[str], why: str) -> None:
        """``Operations.force_stop`` on ``hosts``: a worker's `ray start` still running is ended too."""
        if not hosts:
            return
        self.rt.reporter.warn(f"stopping Ray on {self._named(hosts)} ({why})")
        # Ctrl-C during a fan-out closed the run's SSH connections for good: the teardown opens its own.
        remote = self.rt.reconnect() if self.rt.reconnect else self.rt.remote
        runner = StepRunner(self.rt.local, remote, lambda h: self.run_dir / "stop" / f"{h.replace(':', '_')}.log",
                            self.opts.parallel)
        try:
            results = stop_ray(self.ops.force_stop, hosts, runner, self.rt.reporter, self.opts.stop_timeout)
        finally:
            if remote is not self.rt.remote:
                remote.close_all()
        self.events.add("stopped-ray", hosts=list(hosts), failed=sorted(results.failed))

    def _named(self, hosts: Sequence[str]) -> str:
        """Hosts for a message: every node, a few by name, or how many (one line at rack scale)."""
        if set(hosts) >= set(self.plan.cluster.nodes):
            return "every node"
        return ", ".join(hosts) if len(hosts) <= NAMED_HOSTS else f"{len(hosts)} nodes"

    # -- the end --------------------------------------------------------------------------------
    def _table(self) -> None:
        if len(self.attempts) > 1 or self.max_restarts:
            rows = [Row(f"attempt {a.number}", f"from {resumed_text(a.resumed_from)}",
                        0 if a.outcome == "succeeded" else 1, a.duration_s,
                        None if a.outcome == "succeeded" else a.outcome[:120]) for a in self.attempts]
            self.rt.reporter.table("attempts", rows)

    def _done(self, result: UpResult) -> UpResult:
        self._table()
        return result

    def _give_up(self, result: UpResult, cause: Cause) -> UpResult:
        self._table()
        self.events.add("gave-up", **cause.to_json())
        if not self.max_restarts:
            return result
        raise LaunchError(f"restarts exhausted: {len(self.attempts)} attempt(s) failed; the last: {cause}",
                          exit_code=ExitCode.FAILED)
