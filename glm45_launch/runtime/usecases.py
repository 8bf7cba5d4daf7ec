"""The use cases, as a library: ``up``, ``preflight``, ``down``, ``status``, ``convert``.

Each takes a plan (or the hosts) and a :class:`Runtime` (the injected side effects) and
returns a result; the CLI is a thin layer that parses options, calls one of these, and
prints. A team's own launcher calls them the same way::

    rt = Runtime.real(SshOptions(user="root"))
    result = up(build_plan(spec), UpOptions(run_dir="runs/first"), rt)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glm45_launch.checks.preflight_report import PreflightOptions, PreflightReport
from glm45_launch.core.convert_plan import ConvertPlan
from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.launch_steps import build_down_plan
from glm45_launch.core.operations import RAYLET_CHECK, WatchSettings, build_operations, watch_problem
from glm45_launch.core.plan import Plan
from glm45_launch.core.steps import DEFAULT_PARALLEL, HEAD, WORKER, ProbeStep
from glm45_launch.errors import ExitCode, LaunchError
from glm45_launch.runtime.causes import exc_line
from glm45_launch.runtime.executor import ExecOptions, UpResult, require_head_here
from glm45_launch.runtime.interfaces import CommandRunner, HostFacts, RayQueries, RemoteRunner, Reporter, Row
from glm45_launch.runtime.lock import head_lock
from glm45_launch.runtime.results import FanOutResult
from glm45_launch.runtime.rundir import prepare_run_dir
from glm45_launch.runtime.steprunner import StepRunner

if TYPE_CHECKING:
    from glm45_launch.runtime.ssh import SshOptions


@dataclass
class Runtime:
    """The side effects a use case may cause, injected (tests pass ``glm45_launch.testing.fakes``)."""

    local: CommandRunner
    remote: RemoteRunner
    ray: RayQueries
    host: HostFacts
    reporter: Reporter
    # A new RemoteRunner with connections of its own: a teardown after Ctrl-C closed ``remote``'s,
    # and an attempt's held sessions, closed when it ends (None: reuse ``remote``).
    reconnect: Callable[[], RemoteRunner] | None = None

    def close(self) -> None:
        """Close the run's SSH connections (the CLI's process exit does it too)."""
        self.remote.close_all()

    @classmethod
    def real(cls, ssh: SshOptions, quiet: bool = False, mask: Callable[[str], str] | None = None) -> Runtime:
        """This machine, SSH (one paramiko connection per host for the whole run), Ray's SDK and
        rich on stderr."""
        from glm45_launch.runtime.hostfacts import LocalHostFacts
        from glm45_launch.runtime.local import LocalRunner
        from glm45_launch.runtime.ray_api import RayClient
        from glm45_launch.runtime.reporter import RichReporter
        from glm45_launch.runtime.ssh import SshRunner

        return cls(LocalRunner(mask=mask), SshRunner(ssh), RayClient(), LocalHostFacts(), RichReporter(quiet),
                   reconnect=lambda: SshRunner(ssh))


@dataclass
class UpOptions:
    """How ``up`` runs: the executor's options, and preflight's (None: skipped)."""

    run_dir: Path | str | None = None  # None: ./runs/<time>; made (and checked) once on the head
    parallel: int = DEFAULT_PARALLEL
    serial: bool = False
    join_timeout: float = 180.0
    preflight: PreflightOptions | None = field(default_factory=lambda: PreflightOptions(libs=False))
    quiet: bool = False
    lock_path: Path | None = None  # None: lock.lock_path() (GLM45_LOCK_DIR, else /tmp/glm45-launch)
    watch: WatchSettings = field(default_factory=WatchSettings)  # health watch, diagnostics, restarts

    def exec_options(self, run_dir: Path) -> ExecOptions:
        return ExecOptions(run_dir=run_dir, parallel=self.parallel, serial=self.serial,
                           join_timeout=self.join_timeout, quiet=self.quiet)


def preflight(plan: Plan, opts: PreflightOptions, run_dir: Path, rt: Runtime) -> PreflightReport:
    """Probe every host; the report says what failed (nothing raises for a failed check)."""
    from glm45_launch.runtime.preflight_run import run_preflight

    return run_preflight(plan, opts, run_dir, local=rt.local, remote=rt.remote, host=rt.host,
                         ssh_user=plan.cluster.ssh_user)


def up(plan: Plan, opts: UpOptions, rt: Runtime) -> UpResult:
    """Preflight (unless skipped), then every step of ``plan`` (:class:`Executor`), on the head,
    with the health watch, diagnostics on a failure and up to ``opts.watch.max_restarts``
    restarts (:class:`~glm45_launch.runtime.restarts.Supervisor`)."""
    problem = watch_problem(plan, opts.watch)
    if problem:
        raise LaunchError(problem)
    require_head_here(plan, rt.host)  # before preflight contacts any host, before any file is written
    run_dir = prepare_run_dir(opts.run_dir)
    with head_lock(run_dir, opts.lock_path):  # one launch per head: a second one is refused, named
        if opts.preflight is not None:
            from glm45_launch.runtime.preflight_run import preflight_or_raise

            # Host checks first: a failure raises before anything is started or stopped.
            preflight_or_raise(plan, opts.preflight, run_dir, local=rt.local, remote=rt.remote, host=rt.host,
                               reporter=rt.reporter, ssh_user=plan.cluster.ssh_user)
        from glm45_launch.runtime.programs import diagnose_program
        from glm45_launch.runtime.restarts import Supervisor

        ops = build_operations(plan, opts.watch, diagnose_program())
        return Supervisor(plan, ops, opts.exec_options(run_dir), rt).run()


def down(hostfile: Hostfile, head: str | None, rt: Runtime, run_dir: Path, parallel: int = DEFAULT_PARALLEL) -> list[Row]:
    """``ray stop --force`` on every host at once (and on the head here when it is this machine
    and not in the hostfile); one row per host."""
    steps = build_down_plan(hostfile, head, head_is_local=bool(head) and rt.host.is_local_address(head or ""))
    runner = StepRunner(rt.local, rt.remote, lambda h: run_dir / "down" / f"{h.replace(':', '_')}.log",
                        parallel, rt.reporter.echo_for)
    results = runner.run(steps, timeout_s=60, echo=True)
    return [Row.of(s.host, "ray stop --force" + (" (here)" if s.where == HEAD else ""), results[s.host])
            for s in steps]


@dataclass
class HostState:
    host: str
    reachable: bool
    ray_running: bool  # a raylet process is there (pgrep -x raylet)
    alive_in_cluster: bool  # ALIVE in Ray's node table
    gpus: float
    error: str | None
    ray_state: str = "unknown"  # ALIVE, DEAD, absent (not in the node table), unknown (no cluster answer)

    @property
    def health(self) -> str:
        """One word or phrase: ok, or what is wrong with this node."""
        if not self.reachable:
            return "unreachable"
        if self.alive_in_cluster:
            return "ok" if self.ray_running else "LOST: no raylet (Ray has not noticed yet)"
        if self.ray_state == "DEAD":
            return "LOST: DEAD in Ray's node table" + ("" if not self.ray_running else " (a raylet runs: another cluster?)")
        return "raylet running, not in this cluster" if self.ray_running else "no Ray"

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "health": self.health}


@dataclass
class StatusReport:
    address: str
    hosts: list[HostState]
    jobs: list[dict[str, Any]]
    alive_nodes: int
    alive_gpus: float
    cluster_error: str | None

    @property
    def healthy(self) -> bool:
        return all(h.reachable and h.ray_running and h.alive_in_cluster for h in self.hosts)

    def to_json(self) -> dict[str, Any]:
        return {"hosts": [h.to_json() for h in self.hosts], "jobs": self.jobs, "cluster_error": self.cluster_error,
                "alive_nodes": self.alive_nodes}


def status(hostfile: Hostfile, address: str, rt: Runtime, parallel: int = DEFAULT_PARALLEL, log_dir: Path | None = None) -> StatusReport:
    """Per host: reachable, a raylet running (``pgrep -x raylet`` over SSH), its state in Ray's
    node table, GPUs; and the cluster's jobs at ``address`` with their state and runtime."""
    import tempfile

    steps = [ProbeStep(where=WORKER, host=h, commands=(RAYLET_CHECK,), purpose=f"is a raylet running on {h}")
             for h in hostfile.names]
    with tempfile.TemporaryDirectory(prefix="glm45-status-") as tmp:
        logs = log_dir or Path(tmp)
        results = StepRunner(rt.local, rt.remote, lambda h: logs / f"{h.replace(':', '_')}.log", parallel).run(steps)
    cluster_error = None
    try:
        nodes = rt.ray.nodes(address)
    except Exception as exc:  # noqa: BLE001 - no cluster is a state to report, not a crash
        nodes, cluster_error = [], exc_line(exc)
    rows = []
    for step in steps:
        r = results[step.host]
        addrs = rt.host.resolve(step.host)
        mine = [n for n in nodes if n.ip in addrs]
        node = next((n for n in mine if n.alive), None)
        state = "unknown" if cluster_error else "ALIVE" if node else "DEAD" if mine else "absent"
        rows.append(HostState(step.host, r.error is None or r.exit_code is not None, r.exit_code == 0,
                              node is not None, node.gpus if node else 0, r.error if r.exit_code is None else None,
                              state))
    jobs: list[dict[str, Any]] = []
    if cluster_error is None:
        now = time.time()
        try:
            jobs = [{"id": j.job_id, "status": j.status, "entrypoint": j.entrypoint, "start_time": j.start_time,
                     "end_time": j.end_time, "runtime_s": j.runtime_s(now)} for j in rt.ray.jobs(address)]
        except Exception as exc:  # noqa: BLE001
            cluster_error = "jobs: " + exc_line(exc)
    return StatusReport(address, rows, jobs, sum(n.alive for n in nodes), sum(n.gpus for n in nodes if n.alive),
                        cluster_error)


@dataclass
class ConvertResult:
    skipped: bool
    rows: list[Row]

    @property
    def failed(self) -> list[str]:
        return [r.host for r in self.rows if not r.ok]


def convert(cplan: ConvertPlan, rt: Runtime, run_dir: Path, timeout_s: float, force: bool = False) -> ConvertResult:
    """The check (skip when converted), then every node's torchrun at once: rank 0 here when
    the head is this machine, the others over SSH."""
    head_here = rt.host.is_local_address(cplan.master_addr)

    def where(step: Any) -> Any:
        from dataclasses import replace

        return step if head_here or step.where == WORKER else replace(step, where=WORKER)

    runner = StepRunner(rt.local, rt.remote, lambda h: run_dir / "convert" / f"{h.replace(':', '_')}.log",
                        max(1, len(cplan.steps)), rt.reporter.echo_for)
    if not force:
        check = runner.run([where(cplan.check)], timeout_s=60)[cplan.check.host]
        if check.exit_code == 0:
            rt.reporter.ok(cplan.skip_message)
            return ConvertResult(True, [])
    rt.reporter.phase(f"converting {cplan.hf_checkpoint} -> {cplan.save} on {len(cplan.steps)} node(s); "
                      f"logs in {run_dir}")
    steps = [where(s) for s in cplan.steps]
    results: FanOutResult = runner.run(steps, timeout_s=timeout_s, echo=True)
    rows = [Row.of(s.host, "convert (here)" if s.where == HEAD else "convert", results[s.host]) for s in steps]
    rows.sort(key=lambda r: r.what != "convert (here)")
    result = ConvertResult(False, rows)
    if not result.failed:
        rt.reporter.ok(f"converted: {cplan.save} ({time.strftime('%H:%M:%S')})")
    return result


def raise_if_failed(rows: list[Row], what: str, hint: str = "") -> None:
    """One line naming every failed host."""
    failed = [r.host for r in rows if not r.ok]
    if failed:
        raise LaunchError(f"{what} failed on: {', '.join(failed)}{hint}", exit_code=ExitCode.FAILED)
