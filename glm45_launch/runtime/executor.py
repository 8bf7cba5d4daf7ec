"""Executing a plan: one handler per step kind, side effects through injected interfaces.

The plan is the contract: every command that runs is one of its steps, word for word
(``plan.steps``, then ``plan.on_failure`` or ``plan.on_interrupt``). What the executor adds
is around the commands, never inside them: the checks a step asks for (ports), a remote
``timeout`` wrapper, waiting for the nodes to join, and stopping what it started when
something fails. On Ctrl-C it stops the job (``plan.on_interrupt``) and says where it started
Ray; its caller (:class:`~.restarts.Supervisor`) runs the forced stop there when the job had no
id yet. It reports through a :class:`~.interfaces.Reporter` and never prints.
"""

from __future__ import annotations

import json
import re
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
    DEFAULT_PARALLEL,
    WORKER,
    CleanupStep,
    HeadStartStep,
    HoldStep,
    JoinStep,
    Step,
    StopJobStep,
    SubmitStep,
    WorkerStartStep,
    WriteFileStep,
)
from glm45_launch.errors import ExitCode, LaunchError
from glm45_launch.runtime.causes import Cause, exc_line, job_cause
from glm45_launch.runtime.holds import HeldSessions
from glm45_launch.runtime.interfaces import CommandRunner, HostFacts, RayQueries, RemoteRunner, Reporter, Row
from glm45_launch.runtime.jobstop import STOP_TIMEOUT_S, stop_ray
from glm45_launch.runtime.procs import KILLERS, ancestors, parse_sleep
from glm45_launch.runtime.ray_api import missing_hosts
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.steprunner import StepRunner

T = TypeVar("T")
_JOB_ID = re.compile(r"Job '([^']+)' submitted successfully")
HEAD_START = "ray start --head"  # the background step's name in messages and the table


@dataclass
class ExecOptions:
    """How to run a plan (not what: that is the plan)."""

    run_dir: Path
    parallel: int = DEFAULT_PARALLEL
    serial: bool = False
    join_timeout: float = 180.0
    head_timeout: float = 300.0
    stop_timeout: float = STOP_TIMEOUT_S
    quiet: bool = False
    ops: Operations | None = None  # the health watch while the job runs (None: no watch)


@dataclass
class UpResult:
    exit_code: int
    job_id: str | None = None
    job_status: str | None = None
    rows: list[Row] = field(default_factory=list)
    cause: Cause | None = None  # why it failed (None: it did not, or Ctrl-C)
    started: tuple[str, ...] = ()  # Ctrl-C: where Ray was started or a start was sent (the caller stops it)


class StepFailed(Exception):
    """A step failed: the launch stops and what it started is torn down."""


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
    """Runs a ``Plan``: :meth:`up` brings the cluster up and runs the job."""

    def __init__(
        self,
        plan: Plan,
        opts: ExecOptions,
        *,
        local: CommandRunner | None = None,
        remote: RemoteRunner | None = None,
        ray: RayQueries | None = None,
        host: HostFacts | None = None,
        reporter: Reporter | None = None,
        connect: Callable[[], RemoteRunner] | None = None,
    ) -> None:
        """``connect`` makes a RemoteRunner with connections of its own, for the held sessions
        (``--hold-workers``) that end with the run (None: they share ``remote``'s)."""
        from glm45_launch.core.plan_secrets import plan_secrets
        from glm45_launch.core.secrets import mask_text

        self.plan = plan
        self.opts = opts
        secrets = plan_secrets(plan)
        if local is None:
            from glm45_launch.runtime.local import LocalRunner

            # Logs and the live output never show a secret; the commands themselves get it raw.
            local = LocalRunner(mask=(lambda text: mask_text(text, secrets)) if secrets else None)
        if remote is None:
            from glm45_launch.runtime.ssh import SshOptions, SshRunner

            ssh = SshOptions(user=plan.cluster.ssh_user)
            remote = SshRunner(ssh)
            connect = connect or (lambda: SshRunner(ssh))
        if ray is None:
            from glm45_launch.runtime.ray_api import RayClient

            ray = RayClient()
        if host is None:
            from glm45_launch.runtime.hostfacts import LocalHostFacts

            host = LocalHostFacts()
        if reporter is None:
            from glm45_launch.runtime.reporter import RichReporter

            reporter = RichReporter(opts.quiet)
        self.local, self.remote, self.ray, self.host, self.report = local, remote, ray, host, reporter
        head = plan.head
        self.steps = StepRunner(local, remote, self.log_path, 1 if opts.serial else opts.parallel,
                                lambda h: reporter.echo_for("head" if h == head else h))
        self.rows: list[Row] = []
        self.started: list[str] = []  # hosts where `ray start` was sent: what teardown must stop
        self.run_dir = opts.run_dir
        self.job_id: str | None = None
        self._background: list[tuple[Step, _Background[CommandResult]]] = []
        self._holds = HeldSessions(local, remote, self.log_path, reporter, connect)  # --hold-workers
        self._handlers: dict[str, Callable[[list[Step]], UpResult | None]] = {
            CleanupStep.kind: self._cleanup,
            HeadStartStep.kind: self._head_start,
            WorkerStartStep.kind: self._start_workers,
            JoinStep.kind: self._join,
            WriteFileStep.kind: self._write_files,
            HoldStep.kind: self._holds.open,
            SubmitStep.kind: self._submit,
        }

    # -- logs -------------------------------------------------------------------------
    def log_path(self, host: str) -> Path:
        name = "head" if host == self.plan.head else host.replace(":", "_")
        return self.run_dir / "hosts" / f"{name}.log"

    def write_plan(self) -> None:
        """plan.json / plan.txt in the run directory, secrets masked like `plan` prints them."""
        from glm45_launch.core.render import render

        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "plan.json").write_text(render(self.plan, "json"))
        (self.run_dir / "plan.txt").write_text(render(self.plan, "text"))

    # -- the whole launch -----------------------------------------------------------------
    def up(self) -> UpResult:
        """Run ``plan.steps`` in order; on a failure, ``plan.on_failure`` for the hosts started.
        On Ctrl-C the result names them (``started``): what to stop is the caller's choice
        (:class:`~.restarts.Supervisor`). The held sessions end with it, whatever the outcome."""
        require_head_here(self.plan, self.host)
        self.write_plan()
        self.report.phase(f"run directory: {self.run_dir}")
        try:
            return self._up()
        finally:
            self._holds.release()

    def _up(self) -> UpResult:
        try:
            result: UpResult | None = None
            for batch in batches(self.plan.steps):
                handler = self._handlers.get(batch[0].kind)
                if handler is None:
                    raise LaunchError(f"the executor has no handler for step kind {batch[0].kind!r}")
                result = handler(batch) or result
            self._await_background()
            result = result or UpResult(ExitCode.OK, rows=self.rows)
            self._finish(result)
            return result
        except StepFailed as failure:
            return self._fail(str(failure))
        except KeyboardInterrupt:
            killed = self._kill_commands()
            self.report.error("interrupted" + (f"; killed launcher children {killed}" if killed else ""))
            result = UpResult(ExitCode.INTERRUPTED, self.job_id, rows=self.rows,
                              started=tuple(dict.fromkeys(self.started)))
            self._finish(result)
            return result

    # -- handlers ---------------------------------------------------------------------------
    def _cleanup(self, batch: list[Step]) -> None:
        (step,) = batch
        assert isinstance(step, CleanupStep)
        self._refuse_foreign_port_holders(step.guard_ports)
        self.report.phase("cleanup on the head" + (" (sparing the launcher)" if step.spare_launcher else ""))
        spare = ancestors() if step.spare_launcher else set()
        killed_any = False
        for argv in step.commands:
            if step.spare_launcher and argv[0] in KILLERS:
                res = self.local.pkill_sparing(argv, self.log_path(step.host), spare)
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
                raise StepFailed(f"cleanup failed on the head: `{shell_join(argv)}` {res.reason}")

    def _head_start(self, batch: list[Step]) -> None:
        (step,) = batch
        assert isinstance(step, HeadStartStep)
        for host, port, what in step.free_ports:
            if self.host.port_in_use(host, port):
                hint = "" if self.plan.spec.cleanup else " (--no-cleanup left it running)"
                raise LaunchError(
                    f"{what} port {host}:{port} is already in use{hint}: another Ray cluster or service holds "
                    "it; refusing to join a foreign cluster (stop it, e.g. `glm45-launch down`)", exit_code=1,
                )
        self.report.phase(f"starting the Ray head on {step.host}")
        self.started.append(step.host)
        argv = step.commands[0]
        job = _Background(lambda: self._run_here(step, argv, self.opts.head_timeout))
        self._background.append((step, job))
        if step.ready_port is None:
            job.wait()
            return
        # The next steps need only the head's GCS: once its port answers they can run while the
        # head still starts its dashboard and raylet (the bash recipe waits for all of it).
        # `ray start --address` itself retries the GCS for ~20 s, so this is safe margin.
        while not job.done.is_set() and not self.host.port_in_use(step.host, step.ready_port, timeout_s=0.2):
            job.done.wait(0.1)

    def _await_background(self) -> None:
        """Wait for the background steps (the head start); a failed one fails the launch."""
        while self._background:
            step, job = self._background[0]
            res = job.wait()  # still listed while it runs: Ctrl-C's kill waits for it (_kill_commands)
            self._background.pop(0)
            self.rows.append(Row.of(step.host, HEAD_START, res, job.duration_s))
            if not res.ok:
                self._tail("head", res.output_tail)
                raise StepFailed(f"{HEAD_START} failed on {step.host}")

    def _start_workers(self, batch: list[Step]) -> None:
        if any(job.done.is_set() and (job.error or not (job.result and job.result.ok))
               for _, job in self._background):
            self._await_background()  # the head already failed: say so, start nothing
        mode = " one by one" if self.opts.serial else f", {min(len(batch), self.opts.parallel)} at a time"
        self.report.phase(f"starting {len(batch)} worker(s) over SSH{mode}")
        # A host counts as started once its command is sent: teardown (after a failure or
        # Ctrl-C) must include hosts whose `ray start` was still running.
        results = self.steps.fan_out(batch, on_dispatch=self.started.append)
        # A host the command never reached runs nothing: teardown has nothing to stop there.
        self.started = [h for h in self.started if h not in results or results[h].sent]
        self._await_background()
        for host in sorted(results):
            self.rows.append(Row.of(host, "ray start (worker)", results[host]))
        if results.failed:
            for h, r in results.failed.items():
                why = r.error or f"ray start exited {r.exit_code}"
                self.report.error(why if h in why else f"{h}: {why}")
                self._tail(h, r.output_tail)
            raise StepFailed(f"{len(results.failed)} worker(s) failed to start: {', '.join(sorted(results.failed))}")

    def _join(self, batch: list[Step]) -> None:
        (step,) = batch
        assert isinstance(step, JoinStep)
        self._await_background()
        missing = self._wait_for_join(step)
        if missing:
            for host in missing:
                log = self.log_path(host)
                if log.exists():
                    self._tail(host, log.read_text().splitlines())
            raise StepFailed(f"not joined after {self.opts.join_timeout:.0f}s: {', '.join(missing)}")
        self.report.ok(f"cluster ready: {len(step.hosts)} node(s), {step.gpus} GPUs")

    def _wait_for_join(self, step: JoinStep) -> list[str]:
        """Wait until every node and GPU has joined; returns the hosts still missing."""
        deadline = time.monotonic() + self.opts.join_timeout
        missing = list(step.hosts)
        addrs = {h: self.host.resolve(h) for h in step.hosts}  # once, not every poll
        last_error = ""
        answered = False  # did the cluster ever answer? If not, say why, not "nobody joined"
        with self.report.progress("joining", len(step.hosts)) as bar:
            while True:
                try:
                    nodes = self.ray.nodes(step.address)
                    answered = True
                    missing = missing_hosts(step.hosts, nodes, addrs.__getitem__)
                    gpus = sum(n.gpus for n in nodes if n.alive)
                    bar.update(len(step.hosts) - len(missing), f"{gpus:.0f}/{step.gpus} GPUs")
                    if not missing and gpus >= step.gpus:
                        return []
                    if not missing:
                        last_error = f"{gpus:.0f} of {step.gpus} GPUs"
                except Exception as exc:  # noqa: BLE001 - the dashboard may still be starting
                    last_error = exc_line(exc, 300)
                if time.monotonic() > deadline:
                    if not answered:
                        raise StepFailed(
                            f"cannot query the cluster at {step.address} (Ray's state API, needs ray[default] "
                            f"on the head): {last_error}"
                        )
                    if last_error and not missing:
                        missing = [f"(all nodes joined but only {last_error})"]
                    return missing
                time.sleep(0.5)

    def _write_files(self, batch: list[Step]) -> None:
        """Files the job reads (e.g. --mis's YAML), written here on the head, on the shared FS."""
        (step,) = batch
        assert isinstance(step, WriteFileStep)
        for path, content in step.files:
            target = Path(path)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            except OSError as exc:
                raise StepFailed(f"cannot write {path}: {exc.strerror}") from None
            self.report.phase(f"wrote {path}")

    def _submit(self, batch: list[Step]) -> UpResult:
        (step,) = batch
        assert isinstance(step, SubmitStep)
        watch = None if step.no_wait else self._start_watch()

        def on_line(line: str) -> None:
            m = _JOB_ID.search(line)
            if m and self.job_id is None:
                self.job_id = m.group(1)
                (self.run_dir / "job_id").write_text(self.job_id + "\n")
            if watch is not None:
                watch.output_seen()

        try:
            res = self.local.run(step.commands[0], self.run_dir / "job.log", self.report.echo_for("job"),
                                 env=dict(step.env), cwd=step.cwd, on_line=on_line)
        except KeyboardInterrupt:
            self.local.kill_children()
            if watch is not None:
                watch.close()
            self._stop_job()
            raise
        if watch is not None:
            watch.close()  # the job ended (or the watch stopped it): wait for its stop sequence
        self.rows.append(Row("head", "ray job submit", res.exit_code, res.duration_s, res.error))
        job_id = self.job_id
        if step.no_wait:
            if res.ok and job_id:
                self.report.ok(f"submitted job {job_id} (not waiting: `ray job logs -f {job_id}`)")
                return UpResult(ExitCode.OK, job_id, "SUBMITTED", self.rows)
            self.report.error("job submission failed")
            return UpResult(ExitCode.FAILED, job_id, None, self.rows)
        status = None
        if job_id:
            try:
                status = self.ray.job_status(step.address, job_id)
            except Exception as exc:  # noqa: BLE001 - report, do not crash, after the job ran
                status = f"unknown ({type(exc).__name__})"
        code = ExitCode.OK if res.ok and status == "SUCCEEDED" else ExitCode.FAILED
        say = self.report.ok if code == ExitCode.OK else self.report.error
        say(f"job {job_id or '?'} finished: {status or 'not submitted'}")
        cause = None if code == ExitCode.OK else job_cause(watch.verdict if watch else None, job_id, status,
                                                           res.reason)
        return UpResult(code, job_id, status, self.rows, cause=cause)

    # -- the health watch (runtime/health.py) -----------------------------------------------------
    def _start_watch(self) -> Any:
        """The health watch over the job, when ``opts.ops`` asks for one (else None)."""
        if self.opts.ops is None or not self.opts.ops.settings.watch:
            return None
        from glm45_launch.runtime.health import start_watch

        return start_watch(self.opts.ops, local=self.local, remote=self.remote, ray=self.ray, host=self.host,
                           reporter=self.report, steps=self.steps, run_dir=self.run_dir,
                           job_id=lambda: self.job_id, started=lambda: list(self.started))

    # -- stopping -------------------------------------------------------------------------
    def _stop_job(self) -> None:
        """``plan.on_interrupt``: stop the submitted job."""
        if not self.job_id:
            return
        for step in self.plan.on_interrupt:
            if isinstance(step, StopJobStep):
                self.report.warn(f"stopping job {self.job_id} (ray job stop)")
                for argv in step.for_job(self.job_id):
                    self.local.run(argv, self.run_dir / "job.log", self.report.echo_for("job"),
                                   timeout_s=self.opts.stop_timeout)

    def stop_cluster(self, reason: str) -> None:
        """``plan.on_failure`` for the hosts where this run started Ray (head here, workers over SSH)."""
        self.report.warn(f"stopping what this run started ({reason})")
        stop_ray(self.plan.on_failure, self.started, self.steps, self.report, self.opts.stop_timeout)

    def _fail(self, reason: str) -> UpResult:
        self.report.error(f"error: {reason}")
        self.stop_cluster("launch failed")
        self._finish(UpResult(ExitCode.FAILED, rows=self.rows))
        raise LaunchError(reason, exit_code=ExitCode.FAILED)

    # -- helpers ----------------------------------------------------------------------------
    def _kill_commands(self) -> list[int]:
        """Ctrl-C: kill the launcher's commands, and again until the head start in the background
        has ended (it may not be a child yet), so it starts nothing after the teardown."""
        killed = self.local.kill_children()
        deadline = time.monotonic() + self.opts.stop_timeout
        for _, job in self._background:
            while not job.done.wait(0.1) and time.monotonic() < deadline:
                killed += self.local.kill_children()
        return sorted(set(killed))

    def _settle(self, limit_s: float) -> CommandResult:
        start = time.monotonic()
        while time.monotonic() - start < limit_s and self.host.ray_processes_left():
            time.sleep(0.1)
        return CommandResult(command="sleep", argv=["sleep"], exit_code=0, duration_s=time.monotonic() - start)

    def _refuse_foreign_port_holders(self, ports: Sequence[tuple[str, int, str]]) -> None:
        """Before the cleanup: a port held by anything but Ray is someone else's service, which
        the cleanup would not free (and whose machine it would still `pkill -9 python`)."""
        for host, port, what in ports:
            if not self.host.port_in_use(host, port):
                continue
            report = self.host.port_holders(port)
            foreign = [h for h in report["holders"] if not is_ray_process(h["comm"], h["cmdline"])]
            if foreign or not report["holders"]:
                who = ", ".join(f"{h['comm']} (pid {h['pid']})" for h in foreign) or report["error"]
                raise LaunchError(
                    f"{what} port {host}:{port} is already in use by {who}, not Ray: refusing before the "
                    "cleanup (stop it, or move Ray with a recipe file's [defaults])", exit_code=1,
                )

    def _run_here(self, step: Step, argv: Sequence[str], timeout_s: float | None) -> CommandResult:
        return self.local.run(argv, self.log_path(step.host), self.report.echo_for("head"), env=dict(step.env),
                              cwd=step.cwd, timeout_s=timeout_s)

    def _tail(self, host: str, lines: Sequence[str]) -> None:
        for line in list(lines)[-10:]:
            self.report.line(f"{host} log", line)

    def _finish(self, result: UpResult) -> None:
        self._holds.report_early_ends()
        self.report.table("glm45-launch up", self.rows)
        summary: dict[str, Any] = {
            "exit_code": int(result.exit_code), "job_id": result.job_id, "job_status": result.job_status,
            "outcomes": [r.__dict__ for r in self.rows],
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def require_head_here(plan: Plan, host: HostFacts) -> None:
    """The launcher runs on the head, like the bash recipe: refuse anywhere else, and refuse a
    worker that is this machine under another name (its cleanup would kill the head)."""
    if not host.is_local_address(plan.head):
        raise LaunchError(
            f"--head {plan.head} is not an address of this machine: run glm45-launch on the head "
            "(the recipe's head-side commands run where the launcher runs)"
        )
    for step in plan.worker_steps:
        if host.is_local_address(step.host):
            line = next((h.line for h in plan.spec.hostfile.hosts if h.name == step.host), 0)
            raise LaunchError(
                f"{plan.spec.hostfile.path}:{line}: {step.host} is this machine (the head, --head "
                f"{plan.head}) under another name: its worker command (`pkill -9 python ; ray stop "
                "--force`) would kill the head; name the head the same way in both"
            )
