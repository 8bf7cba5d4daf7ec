"""The supervision loop: one owner of a run's state, from the first launch to the last record.

Like torch elastic's agent loop (``SimpleElasticAgent._invoke_run``): launch, then every
``interval_s`` monitor, and one decision on what was seen (:class:`~.causes.RunState`,
:class:`~.causes.CauseKind`). A failure, a fault, Ctrl-C or a signal, a stop request from another
shell and a restart all stop things through one path (:class:`~.stopping.Stopper`).

* the job SUCCEEDED (or was submitted, ``--no-wait``): done;
* a node lost, a stall, workers that cannot start, the job FAILED, a failed launch: the job is
  stopped, diagnostics collected; with restarts left (and a cause that allows one) every node must
  answer again (``--host-wait``) and ``plan.steps`` run again; the trainer resumes from ``--load``;
* the job stopped by someone (``ray job stop``), or ``glm45-launch stop``/``down`` from another
  shell (``stop-request.json`` in the run directory): no restart; the run says who stopped it;
* Ctrl-C, SIGTERM, SIGHUP: before the job has an id, Ray is stopped where the attempt started it;
  with restarts on, on every node; while the job runs without restarts, the job is stopped and
  the cluster left up (as the bash recipe does). A second signal forces. Records are written in
  every case.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm45_launch.core.operations import LATEST_ITERATION, Operations
from glm45_launch.core.plan import Plan
from glm45_launch.errors import ExitCode
from glm45_launch.runtime.causes import Cause, CauseKind, Interrupted, RunState, exc_line
from glm45_launch.runtime.diagnostics import collect
from glm45_launch.runtime.executor import ExecOptions, Executor
from glm45_launch.runtime.follow import JobFollower
from glm45_launch.runtime.health import HealthWatch, StartupScan
from glm45_launch.runtime.interfaces import Row
from glm45_launch.runtime.records import STATE, RunRecords, stop_request, who_stopped
from glm45_launch.runtime.runtime import Runtime
from glm45_launch.runtime.signals import Signals, describe
from glm45_launch.runtime.stopping import TERMINAL, Stopper

UNKNOWN_ROUNDS = 3  # rounds in a row the ended job's state cannot be read before it counts as failed


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


@dataclass
class RunResult:
    """How a run ended: its state and exit code, the last job, the cause, and the one error line."""

    state: RunState
    exit_code: int
    job_id: str | None = None
    job_status: str | None = None
    cause: Cause | None = None
    error: str | None = None  # the line the CLI ends with (None: nothing went wrong)
    rows: list[Row] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "exit_code": int(self.exit_code), "job_id": self.job_id,
                "job_status": self.job_status, "cause": self.cause.to_json() if self.cause else None,
                "error": self.error, "outcomes": [r.__dict__ for r in self.rows]}


@dataclass
class _Seen:
    """What one attempt ended with."""

    state: RunState
    cause: Cause | None = None
    job_id: str | None = None
    status: str | None = None


class Supervisor:
    """Runs attempts of one plan until one succeeds, restarts run out, or someone stops it."""

    def __init__(self, plan: Plan, ops: Operations, rt: Runtime, run_dir: Path, opts: ExecOptions | None = None,
                 signals: Signals | None = None) -> None:
        self.plan, self.ops, self.rt, self.opts = plan, ops, rt, opts or ExecOptions()
        self.s = ops.settings
        self.records = RunRecords(run_dir, rt.reporter.warn)
        self.run_dir = run_dir
        self.signals = signals
        self.stopper = Stopper(ops, rt, self.records, signals, plan.head)
        self.wake = threading.Event()
        self.attempts: list[Attempt] = []
        self.executor: Executor | None = None
        self.state = RunState.STARTING

    # -- the loop over attempts -----------------------------------------------------------------
    def run(self) -> RunResult:
        self.records.reserve()
        self.rt.reporter.phase(f"run directory: {self.run_dir}")
        why = "first attempt"
        lost: list[str] = []
        try:
            while True:
                n = len(self.attempts) + 1
                if n > 1:
                    ended = self._wait_for_nodes(lost, why)
                    if ended is not None:
                        return ended
                    request = stop_request(self.run_dir)
                    if request is not None:  # came while the nodes answered
                        return self._stopped_by(request, _Seen(RunState.STOPPED))
                seen = self._attempt(n, why)
                request = stop_request(self.run_dir)
                if request is not None and seen.state is not RunState.SUCCEEDED:
                    return self._stopped_by(request, seen)
                if seen.state in (RunState.SUCCEEDED, RunState.SUBMITTED, RunState.STOPPED):
                    return self._end(seen.state, seen.cause, seen.job_id, seen.status)
                cause = seen.cause
                assert cause is not None
                if self.s.collect and cause.kind is not CauseKind.JOB_STOPPED:
                    self._collect(n, seen.job_id)
                if not cause.restartable or not self.s.max_restarts or (n == 1 and cause.kind is CauseKind.LAUNCH_FAILED):
                    return self._end(RunState.FAILED, cause, seen.job_id, seen.status)
                if n > self.s.max_restarts:
                    self.records.event("gave-up", **cause.to_json())
                    return self._end(RunState.FAILED, cause, seen.job_id, seen.status,
                                     error=f"restarts exhausted: {len(self.attempts)} attempt(s) failed; the last: "
                                           f"{cause}")
                lost = [cause.host] if cause.host else []
                why = f"restart {n} of {self.s.max_restarts} after {cause}"
        except KeyboardInterrupt as exc:
            return self._interrupted(exc)
        finally:
            self.records.drop_reserve()

    # -- one attempt ----------------------------------------------------------------------------
    def _attempt(self, n: int, why: str) -> _Seen:
        resumed = read_iteration(self.ops.checkpoint_dir)
        attempt = Attempt(n, why, resumed, time.time())
        self.attempts.append(attempt)
        self._set_state(RunState.STARTING)
        if self.s.max_restarts:
            self.rt.reporter.phase(f"attempt {n} of at most {self.s.max_restarts + 1} ({why}): "
                                   f"resuming from {resumed_text(resumed)}")
        self.records.event("attempt-start", attempt=n, why=why, resumed_from=resumed)
        start = time.monotonic()
        self.executor = ex = Executor(self.plan, self.ops, self.rt, self.records, self.opts, self.wake)
        seen = _Seen(RunState.INTERRUPTED)
        try:
            launch = ex.launch()
            job = launch.job
            if not launch.ok:
                seen = _Seen(RunState.FAILED, launch.cause, job.job_id if job else None)
                if ex.started:
                    self.stopper.stop(launch.cause.kind.label if launch.cause else "launch failed", hosts=ex.started)
            elif self.plan.spec.no_wait:
                seen = self._submitted(job)
            else:
                assert job is not None
                seen = self._watch(job)
            return seen
        finally:
            ex.release()
            attempt.job_id = seen.job_id or (ex.job.job_id if ex.job else None)
            attempt.status = seen.status
            outcome = {RunState.SUCCEEDED: "succeeded", RunState.SUBMITTED: "submitted",
                       RunState.INTERRUPTED: "interrupted"}.get(seen.state, str(seen.cause or seen.state.value))
            self._record(attempt, start, outcome)
            self.rt.reporter.table("glm45-launch up", ex.rows)

    def _submitted(self, job: JobFollower | None) -> _Seen:
        """``--no-wait``: the submit prints the job id and returns."""
        assert job is not None
        job.join(60.0)
        res = job.result
        if job.job_id and res is not None and res.ok:
            self.executor.rows.append(Row("head", "ray job submit", res.exit_code, res.duration_s))  # type: ignore[union-attr]
            self.rt.reporter.ok(f"submitted job {job.job_id} (not waiting: `ray job logs -f {job.job_id}`)")
            return _Seen(RunState.SUBMITTED, job_id=job.job_id, status="SUBMITTED")
        reason = (res.reason if res else "") or "no job id"
        return _Seen(RunState.FAILED, Cause(CauseKind.JOB_FAILED, f"job submission failed ({reason})"), job.job_id)

    def _watch(self, job: JobFollower) -> _Seen:
        """The monitor loop of a running job: the first thing seen that ends it."""
        self._set_state(RunState.RUNNING, job.job_id)
        watch = HealthWatch(self.ops, self.rt, self.records, self.wake) if self.s.watch else None
        scan = StartupScan(self.ops, self.rt, self.records, self.wake) if self.s.watch else None
        if watch is not None:
            watch.announce(self.s.stall_timeout_s)
        next_round = self.rt.clock() + self.s.interval_s
        unknown = 0
        while True:
            self.wake.wait(max(0.0, next_round - self.rt.clock()))
            self.wake.clear()
            new_round = self.rt.clock() >= next_round
            if new_round:
                next_round = self.rt.clock() + self.s.interval_s
            if stop_request(self.run_dir) is not None:  # `glm45-launch stop`/`down` from another shell
                self.stopper.stop("stop requested from another shell", job=job)
                return _Seen(RunState.STOPPED, None, job.job_id, self._status(job.job_id))
            if job.ended:
                status = self._status(job.job_id)
                if status in TERMINAL:
                    return self._ended(job, status)
                if status in ("RUNNING", "PENDING"):
                    unknown = 0
                    if not job.tail_lost:
                        job.retail()
                elif new_round:
                    unknown += 1
                    if unknown >= UNKNOWN_ROUNDS:
                        return self._fault(job, Cause(CauseKind.JOB_FAILED, f"job {job.job_id}: its state cannot be "
                                                                           f"read ({status})"))
            cause = watch.check(new_round) if watch is not None else None
            if cause is None and scan is not None:
                cause = scan.check(new_round)
            if cause is None and self.s.stall_timeout_s is not None and not job.tail_lost:
                quiet = self.rt.clock() - job.last_output
                if quiet >= self.s.stall_timeout_s:
                    cause = Cause(CauseKind.STALLED, f"no driver output for {quiet:.0f}s (--stall-timeout "
                                                     f"{self.s.stall_timeout_s:g})")
            if cause is not None:
                return self._fault(job, cause)

    def _ended(self, job: JobFollower, status: str) -> _Seen:
        job_id = job.job_id
        if status == "SUCCEEDED":
            self.rt.reporter.ok(f"job {job_id} finished: {status}")
            return _Seen(RunState.SUCCEEDED, job_id=job_id, status=status)
        self.rt.reporter.error(f"job {job_id} finished: {status}")
        if status == "STOPPED":
            return _Seen(RunState.STOPPED, Cause(CauseKind.JOB_STOPPED, f"job {job_id} was stopped (ray job stop / "
                                                                         "glm45-launch stop)"), job_id, status)
        return _Seen(RunState.FAILED, Cause(CauseKind.JOB_FAILED, f"job {job_id} ended {status}"), job_id, status)

    def _fault(self, job: JobFollower, cause: Cause) -> _Seen:
        """A fault while the job runs: name it, stop the job (forced on the started hosts if stuck)."""
        self._set_state(RunState.STOPPING, job.job_id)
        self.rt.reporter.error(f"{cause}" + (f": stopping job {job.job_id}" if job.job_id else ""))
        self.records.event("fault-detected", **cause.to_json(), job_id=job.job_id)
        started = self.executor.started if self.executor else []
        self.stopper.stop(str(cause), job=job, if_stuck=started)
        return _Seen(RunState.FAILED, cause, job.job_id, self._status(job.job_id))

    def _status(self, job_id: str | None) -> str | None:
        if not job_id:
            return None
        try:
            return self.rt.ray.job_status(self.ops.node_table, job_id)
        except Exception as exc:  # noqa: BLE001 - the job server may be gone: a state of its own
            return f"unknown ({exc_line(exc, 80)})"

    # -- between attempts -----------------------------------------------------------------------
    def _collect(self, n: int, job_id: str | None) -> None:
        collect(self.ops, self.run_dir / "diagnostics" / f"attempt-{n}", job_id, self.rt, self.plan.head)

    def _wait_for_nodes(self, lost: list[str], why: str) -> RunResult | None:
        """Every node must answer its health check (reachable again); a lost one gets --host-wait.
        None: go on; else how the run ends (a node gone, or a stop request)."""
        self._set_state(RunState.RESTARTING)
        wait_s = self.s.host_wait_s
        pending = list(self.plan.cluster.nodes)
        if lost:
            self.rt.reporter.phase(f"waiting for {', '.join(lost)} to come back (at most {wait_s:.0f}s)")
        deadline = time.monotonic() + wait_s
        runner = self.rt.steps(self.run_dir / "health", self.plan.head)
        first = time.monotonic()
        while True:
            request = stop_request(self.run_dir)
            if request is not None:
                return self._stopped_by(request, _Seen(RunState.STOPPED))
            timeout = max(1.0, min(self.s.probe_timeout_s, deadline - time.monotonic()))
            results = runner.run(self.ops.health_for(pending), timeout_s=timeout)
            pending = [h for h in pending if results[h].exit_code is None]
            if not pending:
                if lost:
                    self.rt.reporter.ok(f"{', '.join(lost)} answers again after {time.monotonic() - first:.0f}s")
                return None
            if time.monotonic() >= deadline:
                break
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        reasons = "; ".join(f"{h}: {results[h].reason}" for h in pending)
        cause = Cause(CauseKind.HOST_GONE, f"did not come back within {wait_s:.0f}s ({reasons})", ", ".join(pending))
        self.records.event("gave-up", **cause.to_json())
        return self._end(RunState.FAILED, cause, error=f"{cause}; not restarting (after {why}); diagnostics in "
                                                       f"{self.run_dir / 'diagnostics'}")

    def _stopped_by(self, request: dict[str, Any], seen: _Seen) -> RunResult:
        who = who_stopped(request)
        cause = Cause(CauseKind.STOP_REQUESTED, f"by {who}")
        self.rt.reporter.warn(f"the run was stopped by {who}: no restart")
        self.records.event("stop-requested", **request)
        return self._end(RunState.STOPPED, cause, seen.job_id, seen.status)

    # -- Ctrl-C and signals ---------------------------------------------------------------------
    def _interrupted(self, exc: BaseException) -> RunResult:
        """The rules of the module docstring; records written; exit 128 + the signal."""
        what = describe(exc)
        self.state = RunState.STOPPING
        ex = self.executor
        job = ex.job if ex is not None else None
        job_id = job.job_id if job is not None else None
        killed = ex.abort() if ex is not None else self.rt.local.kill_children()
        self.rt.reporter.error(f"interrupted ({what})" + (f"; killed launcher children {killed}" if killed else ""))
        self.records.event("interrupted", signal=what, job_id=job_id)
        try:
            if self.s.max_restarts:
                self.stopper.stop(f"{what}: no restart, nothing left running", job=job,
                                  hosts=self.plan.cluster.nodes, fresh=True)
            elif job_id is None:
                started = ex.started if ex is not None else []
                if started:
                    self.stopper.stop(f"{what} before the job: nothing left half-started", hosts=started, fresh=True)
            else:
                self.stopper.stop(f"{what} while the job runs", job=job, fresh=True)
                started = ex.started if ex is not None else []
                if started:
                    self.rt.reporter.warn(f"Ray is still running on {self.stopper.named(started)} "
                                          "(`glm45-launch down` stops it)")
        except KeyboardInterrupt:  # a third signal, outside the shielded part: leave now, records first
            self.rt.reporter.error("interrupted again: leaving without finishing the stop")
        code = exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED
        return self._end(RunState.INTERRUPTED, Cause(CauseKind.INTERRUPTED, what), job_id, exit_code=code,
                         error=f"interrupted ({what})")

    # -- records --------------------------------------------------------------------------------
    def _set_state(self, state: RunState, job_id: str | None = None) -> None:
        self.state = state
        self.records.write_json(STATE, {"state": state.value, "attempt": len(self.attempts), "job_id": job_id,
                                        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")})

    def _record(self, attempt: Attempt, start: float, outcome: str) -> None:
        attempt.duration_s = time.monotonic() - start
        attempt.outcome = outcome
        self.records.event("attempt-end", attempt=attempt.number, outcome=outcome, job_id=attempt.job_id,
                           duration_s=round(attempt.duration_s, 1))
        if self.s.max_restarts or attempt.number > 1:
            say = self.rt.reporter.ok if outcome == "succeeded" else self.rt.reporter.warn
            say(f"attempt {attempt.number}: {outcome} after {attempt.duration_s:.0f}s; "
                f"it resumed from {resumed_text(attempt.resumed_from)}")
        self.records.write_json("attempts.json", [a.to_json() for a in self.attempts])

    def _end(self, state: RunState, cause: Cause | None, job_id: str | None = None, status: str | None = None,
             error: str | None = None, exit_code: int | None = None) -> RunResult:
        if len(self.attempts) > 1 or self.s.max_restarts:
            rows = [Row(f"attempt {a.number}", f"from {resumed_text(a.resumed_from)}",
                        0 if a.outcome in ("succeeded", "submitted") else 1, a.duration_s,
                        None if a.outcome in ("succeeded", "submitted") else a.outcome[:120]) for a in self.attempts]
            self.rt.reporter.table("attempts", rows)
        if exit_code is None:
            exit_code = ExitCode.OK if state in (RunState.SUCCEEDED, RunState.SUBMITTED) else ExitCode.FAILED
        if error is None and cause is not None and state is not RunState.SUCCEEDED:
            error = cause.detail if cause.kind is CauseKind.LAUNCH_FAILED else str(cause)
        rows = self.executor.rows if self.executor else []
        result = RunResult(state, exit_code, job_id, status, cause, error, rows)
        self.state = state
        self._set_state(state, job_id)
        self.records.write_json("summary.json", result.to_json())
        return result
