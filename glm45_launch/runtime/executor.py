"""Launching a plan: one handler per step kind, every side effect through the :class:`Runtime`.

The plan is the contract: every command that runs is one of its steps, word for word. What
the executor adds is around the commands, never inside them: the checks a step asks for
(ports), a remote ``timeout`` wrapper, waiting for the nodes to join. It returns a
:class:`LaunchResult` (a failed step is a :class:`Cause`, never an exception) and keeps where it
started Ray (``started``): stopping is the supervisor's, through its one stop path. Ctrl-C
reaches the caller; :meth:`Executor.abort` then kills the commands still in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from glm45_launch.checks.host_checks import is_ray_process
from glm45_launch.core.operations import Operations
from glm45_launch.core.plan import Plan
from glm45_launch.core.quoting import shell_join
from glm45_launch.core.steps import (
    RUN_DIR,
    WORKER,
    CleanupStep,
    HeadStartStep,
    HoldStep,
    JoinStep,
    NetcheckStep,
    Step,
    SubmitStep,
    WorkerStartStep,
    WriteFileStep,
)
from glm45_launch.errors import LaunchError
from glm45_launch.runtime.causes import Cause, CauseKind, exc_line
from glm45_launch.runtime.follow import JobFollower
from glm45_launch.runtime.holds import HeldSessions
from glm45_launch.runtime.interfaces import Row
from glm45_launch.runtime.procs import KILLERS, ancestors, parse_sleep
from glm45_launch.runtime.records import RunRecords, stop_request
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.runtime import Runtime

T = TypeVar("T")
HEAD_START = "ray start --head"  # the background step's name in messages and the table
ABORT_WAIT_S = 60.0  # Ctrl-C: how long the head start in the background may take to end


@dataclass(frozen=True)
class ExecOptions:
    """How to run a plan's steps (not what: that is the plan)."""

    serial: bool = False
    join_timeout: float = 180.0
    head_timeout: float = 300.0


@dataclass
class LaunchResult:
    """What bringing the cluster up and submitting the job gave: the job's follower, or why not."""

    cause: Cause | None = None
    job: JobFollower | None = None
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.cause is None


def _failed(detail: str, host: str | None = None) -> Cause:
    return Cause(CauseKind.LAUNCH_FAILED, detail, host)


class _Background(Generic[T]):
    """Run one call in a daemon thread; keep its result, exception and duration."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._start = time.monotonic()
        self.duration_s = 0.0
        self._fn = fn
        threading.Thread(target=self._run, daemon=True).start()  # a daemon: Ctrl-C never waits for it

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in wait(), in the caller's thread
            self.error = exc
        finally:
            self.duration_s = time.monotonic() - self._start
            self.done.set()

    def wait(self) -> T:
        while not self.done.wait(0.2):
            pass
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def batches(steps: Iterable[Step]) -> list[list[Step]]:
    """Consecutive worker steps of one kind form one batch (run in parallel); others are alone."""
    out: list[list[Step]] = []
    for step in steps:
        prev = out[-1][-1] if out else None
        if prev is not None and step.where == WORKER and prev.where == WORKER and prev.kind == step.kind:
            out[-1].append(step)
        else:
            out.append([step])
    return out


class Executor:
    """Runs one attempt's ``plan.steps``: :meth:`launch` brings the cluster up and submits the job."""

    def __init__(self, plan: Plan, ops: Operations, rt: Runtime, records: RunRecords, opts: ExecOptions,
                 wake: threading.Event) -> None:
        self.plan, self.ops, self.rt, self.records, self.opts, self.wake = plan, ops, rt, records, opts, wake
        self.run_dir = records.run_dir
        self.report = rt.reporter
        self.steps = rt.steps(self.run_dir / "hosts", plan.head, parallel=1 if opts.serial else None, echo=True)
        self.rows: list[Row] = []
        self.started: list[str] = []  # hosts where `ray start` was sent: what a stop must include
        self._background: list[tuple[Step, _Background[CommandResult]]] = []
        self._holds = HeldSessions(rt, self.run_dir / "hosts", plan.head)  # --hold-workers
        self._handlers: dict[str, Callable[[list[Step]], Cause | None]] = {
            CleanupStep.kind: self._cleanup,
            HeadStartStep.kind: self._head_start,
            WorkerStartStep.kind: self._start_workers,
            JoinStep.kind: self._join,
            WriteFileStep.kind: self._write_files,
            HoldStep.kind: self._hold,
            NetcheckStep.kind: self._netcheck,
        }
        self.netcheck: dict[str, Any] | None = None  # the network check's report, once it ran
        self.job: JobFollower | None = None

    def launch(self, until: str | None = None) -> LaunchResult:
        """``plan.steps`` in order (up to the step kind ``until``, exclusive, when given): the first
        failure is the result's cause. Ctrl-C propagates (``started`` says where Ray runs)."""
        for batch in batches(self.plan.steps):
            kind = batch[0].kind
            if kind == until:
                break
            if kind == SubmitStep.kind:
                if stop_request(self.run_dir) is not None:  # `glm45-launch stop`/`down` meanwhile: no job
                    return LaunchResult(Cause(CauseKind.STOP_REQUESTED, "stop requested before the submit"),
                                        rows=self.rows)
                cause = self._await_background() or self._submit(batch)
            else:
                handler = self._handlers.get(kind)
                cause = handler(batch) if handler else _failed(f"the executor has no handler for step kind {kind!r}")
            if cause is not None:
                return LaunchResult(cause, rows=self.rows)
        cause = self._await_background()
        return LaunchResult(cause, self.job, self.rows)

    def abort(self) -> list[int]:
        """Ctrl-C: kill the launcher's commands, and again until the head start in the background
        has ended (it may not be a child yet), so it starts nothing after the stop."""
        killed = self.rt.local.kill_children()
        deadline = time.monotonic() + ABORT_WAIT_S
        for _, job in self._background:
            while not job.done.wait(0.1) and time.monotonic() < deadline:
                killed += self.rt.local.kill_children()
        return sorted(set(killed))

    def release(self) -> None:
        """The attempt is over: its held sessions end; a session that ended early is said."""
        self._holds.report_early_ends()
        self._holds.release()

    # -- handlers ---------------------------------------------------------------------------
    def _cleanup(self, batch: list[Step]) -> Cause | None:
        (step,) = batch
        assert isinstance(step, CleanupStep)
        cause = self._foreign_port_holders(step.guard_ports)
        if cause is not None:
            return cause
        self.report.phase("cleanup on the head" + (" (sparing the launcher)" if step.spare_launcher else ""))
        spare = ancestors() if step.spare_launcher else set()
        killed_any = False
        for argv in step.commands:
            if step.spare_launcher and argv[0] in KILLERS:
                res = self.rt.local.pkill_sparing(argv, self.steps.log_path(step.host), spare)
                killed_any = killed_any or res.exit_code == 0
            elif step.spare_launcher and argv[0] == "sleep":
                # The recipe sleeps blindly so killed processes can exit; we wait for that
                # (at most as long as the recipe would) instead of always waiting.
                res = self._settle(parse_sleep(argv[1:]) if killed_any else 0.0)
            else:
                res = self._run_here(step, argv, self.opts.head_timeout)
            if not step.ignore_errors and not res.ok:
                self.rows.append(Row.of("head", shell_join(argv)[:60], res))
                self._tail("head", res.output_tail)
                return _failed(f"cleanup failed on the head: `{shell_join(argv)}` {res.reason}")
        return None

    def _head_start(self, batch: list[Step]) -> Cause | None:
        (step,) = batch
        assert isinstance(step, HeadStartStep)
        for host, port, what in step.free_ports:
            if self.rt.host.port_in_use(host, port):
                hint = "" if self.plan.spec.cleanup else " (--no-cleanup left it running)"
                return _failed(f"{what} port {host}:{port} is already in use{hint}: another Ray cluster or service "
                               "holds it; refusing to join a foreign cluster (stop it, e.g. `glm45-launch down`)")
        self.report.phase(f"starting the Ray head on {step.host}")
        self.started.append(step.host)
        argv = step.commands[0]
        job = _Background(lambda: self._run_here(step, argv, self.opts.head_timeout))
        self._background.append((step, job))
        if step.ready_port is None:
            job.wait()
            return None
        # The next steps need only the head's GCS: once its port answers they can run while the
        # head still starts its dashboard and raylet (the bash recipe waits for all of it).
        # `ray start --address` itself retries the GCS for ~20 s, so this is safe margin.
        while not job.done.is_set() and not self.rt.host.port_in_use(step.host, step.ready_port, timeout_s=0.2):
            job.done.wait(0.1)
        return None

    def _await_background(self) -> Cause | None:
        """Wait for the background steps (the head start); a failed one fails the launch."""
        while self._background:
            step, job = self._background[0]
            res = job.wait()  # still listed while it runs: Ctrl-C's abort waits for it
            self._background.pop(0)
            self.rows.append(Row.of(step.host, HEAD_START, res, job.duration_s))
            if not res.ok:
                self._tail("head", res.output_tail)
                why = res.root_error or res.reason
                return _failed(f"{HEAD_START} failed on {step.host}" + (f": {why}" if why else ""), step.host)
        return None

    def _start_workers(self, batch: list[Step]) -> Cause | None:
        if any(job.done.is_set() and (job.error or not (job.result and job.result.ok)) for _, job in self._background):
            cause = self._await_background()  # the head already failed: say so, start nothing
            if cause is not None:
                return cause
        mode = " one by one" if self.opts.serial else f", {min(len(batch), self.steps.parallel)} at a time"
        self.report.phase(f"starting {len(batch)} worker(s) over SSH{mode}")
        # A host counts as started once its command is sent: a stop (after a failure or Ctrl-C)
        # must include hosts whose `ray start` was still running.
        results = self.steps.fan_out(batch, on_dispatch=self.started.append)
        # A host the command never reached runs nothing: there is nothing to stop there.
        self.started = [h for h in self.started if h not in results or results[h].sent]
        cause = self._await_background()
        for host in sorted(results):
            self.rows.append(Row.of(host, "ray start (worker)", results[host]))
        if results.failed:
            for h, r in results.failed.items():
                why = r.error or f"ray start exited {r.exit_code}" + (f": {r.root_error}" if r.root_error else "")
                self.report.error(why if h in why else f"{h}: {why}")
                self._tail(h, r.output_tail)
            failed = sorted(results.failed)
            return _failed(f"{len(failed)} worker(s) failed to start: {', '.join(failed)}",
                           failed[0] if len(failed) == 1 else None)
        return cause

    def _join(self, batch: list[Step]) -> Cause | None:
        (step,) = batch
        assert isinstance(step, JoinStep)
        cause = self._await_background()
        if cause is not None:
            return cause
        missing, cause = self._wait_for_join(step)
        if cause is not None:
            return cause
        if missing:
            for host in missing:
                log = self.steps.log_path(host)
                if log.exists():
                    self._tail(host, log.read_text(errors="replace").splitlines())
            return _failed(f"not joined after {self.opts.join_timeout:.0f}s: {', '.join(missing)}")
        self.report.ok(f"cluster ready: {len(step.hosts)} node(s), {step.gpus} GPUs")
        return None

    def _wait_for_join(self, step: JoinStep) -> tuple[list[str], Cause | None]:
        """Wait until every node and GPU has joined: the hosts still missing."""
        deadline = time.monotonic() + self.opts.join_timeout
        missing = list(step.hosts)
        last_error = ""
        answered = False  # did the cluster ever answer? If not, say why, not "nobody joined"
        with self.report.progress("joining", len(step.hosts)) as bar:
            while True:
                try:
                    nodes = self.rt.ray.nodes(step.address)
                    answered = True
                    missing = self.rt.missing(step.hosts, nodes)
                    gpus = sum(n.gpus for n in nodes if n.alive)
                    bar.update(len(step.hosts) - len(missing), f"{gpus:.0f}/{step.gpus} GPUs")
                    if not missing and gpus >= step.gpus:
                        return [], None
                    if not missing:
                        last_error = f"{gpus:.0f} of {step.gpus} GPUs"
                except Exception as exc:  # noqa: BLE001 - the dashboard may still be starting
                    last_error = exc_line(exc, 300)
                if time.monotonic() > deadline:
                    if not answered:
                        return missing, _failed(f"cannot query the cluster at {step.address} (Ray's state API, needs "
                                                f"ray[default] on the head): {last_error}")
                    if last_error and not missing:
                        missing = [f"(all nodes joined but only {last_error})"]
                    return missing, None
                time.sleep(0.5)

    def _netcheck(self, batch: list[Step]) -> Cause | None:
        """The network check's driver, here on the head: its report shown, kept, its verdict the cause."""
        from glm45_launch.core.netcheck_judge import blamed_hosts, summary_line
        from glm45_launch.runtime.netcheck_view import show_report

        (step,) = batch
        assert isinstance(step, NetcheckStep)
        run_dir = str(self.run_dir.resolve())
        config, out = Path(step.config_path.replace(RUN_DIR, run_dir)), Path(step.out_path.replace(RUN_DIR, run_dir))
        try:
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(step.config)
            out.unlink(missing_ok=True)
        except OSError as exc:
            return Cause(CauseKind.NETCHECK_FAILED, f"cannot write {config}: {exc.strerror}")
        self.report.phase(f"netcheck: the network the job will use, {len(self.plan.cluster.nodes)} node(s) "
                          f"(at most {step.timeout_s:.0f}s)")
        res, broken = self._run_watching_startup(step, step.for_run(run_dir)[0])
        if broken is not None:  # the job's runtime env cannot start a Ray worker: the check never would
            self.rows.append(Row.of(step.host, "netcheck", res))
            return broken
        try:
            report = json.loads(out.read_text())
        except (OSError, ValueError):
            self.rows.append(Row.of(step.host, "netcheck", res))
            self._tail("head", res.output_tail)
            return Cause(CauseKind.NETCHECK_FAILED, f"the check ended without a report ({res.reason or 'no output'}; "
                                                    f"log: {self.steps.log_path(step.host)})")
        self.netcheck = report
        self.rows.append(Row(step.host, "netcheck", res.exit_code, res.duration_s,
                             None if report.get("ok") else "failed: " + ", ".join(blamed_hosts(report))[:80]))
        show_report(self.report, report)
        if report.get("ok"):
            self.report.ok(f"netcheck passed ({report.get('backend')}, {report.get('duration_s', 0):.1f}s; {out})")
            return None
        return Cause(CauseKind.NETCHECK_FAILED, f"{summary_line(report)} (report: {out})")

    def _run_watching_startup(self, step: Step, argv: Sequence[str]) -> tuple[CommandResult, Cause | None]:
        """The check's driver, while the start-up scan (the job's) looks at every node's Ray logs
        each round: a worker that cannot start in the job's runtime env ends the check at once."""
        from glm45_launch.runtime.health import StartupScan

        job = _Background(lambda: self._run_here(step, argv, step.timeout_s))
        scan = StartupScan(self.ops, self.rt, self.records, self.wake) if self.ops.startup else None
        next_round = time.monotonic() + self.ops.settings.interval_s  # a healthy check is over by then, mostly
        while not job.done.wait(0.2):
            now = time.monotonic()
            found = scan.check(now >= next_round) if scan is not None else None
            if now >= next_round:
                next_round = now + self.ops.settings.interval_s
            if found is not None:
                self.rt.local.kill_children()  # the check's driver: the launcher's one command now
                return job.wait(), found
        return job.wait(), None

    def _hold(self, batch: list[Step]) -> Cause | None:
        self._holds.open(batch)
        return None

    def _write_files(self, batch: list[Step]) -> Cause | None:
        """Files the job reads (e.g. --mis's YAML), written here on the head, on the shared FS."""
        (step,) = batch
        assert isinstance(step, WriteFileStep)
        for path, content in step.files:
            target = Path(path)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            except OSError as exc:
                return _failed(f"cannot write {path}: {exc.strerror}")
            self.report.phase(f"wrote {path}")
        return None

    def _submit(self, batch: list[Step]) -> Cause | None:
        """``ray job submit``, followed in the background; returns once the job has an id (or the
        submit ended without one)."""
        (step,) = batch
        assert isinstance(step, SubmitStep)
        self.job = JobFollower(self.rt, step, self.ops.job_logs, self.records, self.wake).start()
        self.job.wait_started()
        if self.job.job_id is None:
            self.job.join(10.0)
            res = self.job.result
            self.rows.append(Row("head", "ray job submit", res.exit_code if res else None,
                                 res.duration_s if res else 0.0, (res.reason if res else "") or "no job id"))
            return Cause(CauseKind.JOB_FAILED, f"not submitted ({(res.reason if res else '') or 'no job id'})")
        return None

    # -- helpers ----------------------------------------------------------------------------
    def _settle(self, limit_s: float) -> CommandResult:
        start = time.monotonic()
        while time.monotonic() - start < limit_s and self.rt.host.ray_processes_left():
            time.sleep(0.1)
        return CommandResult(command="sleep", argv=["sleep"], exit_code=0, duration_s=time.monotonic() - start)

    def _foreign_port_holders(self, ports: Sequence[tuple[str, int, str]]) -> Cause | None:
        """Before the cleanup: a port held by anything but Ray is someone else's service, which
        the cleanup would not free (and whose machine it would still `pkill -9 python`)."""
        for host, port, what in ports:
            if not self.rt.host.port_in_use(host, port):
                continue
            report = self.rt.host.port_holders(port)
            foreign = [h for h in report["holders"] if not is_ray_process(h["comm"], h["cmdline"])]
            if foreign or not report["holders"]:
                who = ", ".join(f"{h['comm']} (pid {h['pid']})" for h in foreign) or report["error"]
                return _failed(f"{what} port {host}:{port} is already in use by {who}, not Ray: refusing before the "
                               "cleanup (stop it, or move Ray with a recipe file's [defaults])")
        return None

    def _run_here(self, step: Step, argv: Sequence[str], timeout_s: float | None) -> CommandResult:
        return self.rt.local.run(argv, self.steps.log_path(step.host), self.report.echo_for("head"),
                                 env=dict(step.env), cwd=step.cwd, timeout_s=timeout_s)

    def _tail(self, host: str, lines: Sequence[str]) -> None:
        for line in list(lines)[-10:]:
            self.report.line(f"{host} log", line)


def require_head_here(plan: Plan, rt: Runtime) -> None:
    """The launcher runs on the head, like the bash recipe: refuse anywhere else, and refuse a
    worker that is this machine under another name (its cleanup would kill the head)."""
    if not rt.here(plan.head):
        raise LaunchError(
            f"--head {plan.head} is not an address of this machine: run glm45-launch on the head "
            "(the recipe's head-side commands run where the launcher runs)"
        )
    for step in plan.worker_steps:
        if rt.here(step.host):
            line = next((h.line for h in plan.spec.hostfile.hosts if h.name == step.host), 0)
            raise LaunchError(
                f"{plan.spec.hostfile.path}:{line}: {step.host} is this machine (the head, --head "
                f"{plan.head}) under another name: its worker command (`pkill -9 python ; ray stop "
                "--force`) would kill the head; name the head the same way in both"
            )
