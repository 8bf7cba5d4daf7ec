"""The use cases, as a library: ``up``, ``preflight``, ``down``, ``convert`` (``status`` is
:mod:`.status`).

Each takes a plan (or the hosts) and a :class:`~.runtime.Runtime` (the injected side effects,
passed whole) and returns a result; it decides, the CLI only parses options and prints. A team's
own launcher calls them the same way::

    rt = Runtime.real(SshOptions(user="root"))
    result = up(build_plan(spec), UpOptions(run_dir="runs/first"), rt)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from glm45_launch.checks.preflight_report import PreflightOptions, PreflightReport
from glm45_launch.core.convert_plan import ConvertPlan
from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.launch_steps import build_down_plan
from glm45_launch.core.operations import WatchSettings, build_operations
from glm45_launch.core.plan import Plan
from glm45_launch.core.plan_secrets import plan_secrets
from glm45_launch.core.prepare_plan import PreparePlan, build_prepare
from glm45_launch.core.secrets import mask_text
from glm45_launch.errors import PROG, ExitCode, LaunchError
from glm45_launch.runtime.causes import Cause, CauseKind, RunState
from glm45_launch.runtime.executor import ExecOptions, require_head_here
from glm45_launch.runtime.interfaces import Row
from glm45_launch.runtime.lock import head_lock, running_up
from glm45_launch.runtime.records import RunRecords, read_json, request_stop
from glm45_launch.runtime.rundir import prepare_run_dir
from glm45_launch.runtime.runtime import Runtime
from glm45_launch.runtime.signals import Signals
from glm45_launch.runtime.supervisor import RunResult, Supervisor


@dataclass
class UpOptions:
    """How ``up`` runs: the executor's options, preflight's (None: skipped), the watch's."""

    run_dir: Path | str | None = None  # None: ./runs/<time>; made (and checked) once on the head
    exec: ExecOptions = field(default_factory=ExecOptions)
    preflight: PreflightOptions | None = field(default_factory=lambda: PreflightOptions(libs=False))
    lock_path: Path | None = None  # None: lock.lock_path() (GLM45_LOCK_DIR, else /tmp/glm45-launch)
    watch: WatchSettings = field(default_factory=WatchSettings)  # health watch, diagnostics, restarts
    force: bool = False  # launch even when the config checks find problems (they are warned about)
    prepare: bool = False  # run the preparation (runtime/prepare.py) after preflight, before the launch
    prepare_timeout_s: float | None = None  # per prepare step (None: no limit)


def tell_plan(plan: Plan, rt: Runtime) -> None:
    """What ``plan`` would say (the dashboard exposure, the checkpoint quirk...), secrets masked."""
    secrets = plan_secrets(plan)
    for note in plan.notes:
        rt.reporter.phase(f"{PROG}: note: {mask_text(note, secrets)}")
    for warning in plan.warnings:
        rt.reporter.warn(f"{PROG}: warning: {mask_text(warning, secrets)}")


def check_config(plan: Plan, rt: Runtime, force: bool) -> None:
    """The fast config gates (pure checks, sglang's option names): ``LaunchError`` naming the first
    problem, or (``force``) a warning per problem. The megatron-core build is ``validate``'s."""
    from glm45_launch.checks.libs import require_sglang_options
    from glm45_launch.checks.rules import require_valid

    for problem in require_valid(plan, force=force) + require_sglang_options(plan, force):
        rt.reporter.warn(f"{PROG}: warning: invalid config (--force): {problem.message}")


def preflight(plan: Plan, opts: PreflightOptions, log_dir: Path, rt: Runtime) -> PreflightReport:
    """Probe every host; the report says what failed (nothing raises for a failed check)."""
    from glm45_launch.runtime.preflight_run import run_preflight

    return run_preflight(plan, opts, log_dir, rt)


def up(plan: Plan, opts: UpOptions, rt: Runtime) -> RunResult:
    """The plan's notes and config gates, preflight (unless skipped), then attempts of
    ``plan.steps`` under the :class:`~.supervisor.Supervisor` (health watch, diagnostics,
    restarts, one stop path), on the head; signals take the stop path too."""
    from glm45_launch.runtime.programs import diagnose_program

    ops = build_operations(plan, opts.watch, diagnose_program())  # refuses settings the plan cannot run
    pplan = build_prepare(plan) if opts.prepare else None  # a profile that prepares nothing: refused here
    tell_plan(plan, rt)
    check_config(plan, rt, opts.force)  # invalid configs die here in milliseconds, not in the job
    require_head_here(plan, rt)  # before preflight contacts any host, before any file is written
    run_dir = prepare_run_dir(opts.run_dir)
    with head_lock(run_dir, opts.lock_path):  # one launch per head: a second one is refused, named
        if opts.preflight is not None:
            report = _preflight_phase(plan, opts.preflight, run_dir, rt, pplan)
            if not report.ok:
                cause = Cause(CauseKind.PREFLIGHT_FAILED, report.summary())
                return RunResult(RunState.FAILED, ExitCode.FAILED, cause=cause,
                                 error=f"preflight failed, nothing was started: {report.summary()} "
                                       "(--skip-preflight to launch anyway)")
        if pplan is not None:
            failed = _prepare_phase(pplan, run_dir, opts, rt)
            if failed is not None:
                return failed
        _write_plan(plan, RunRecords(run_dir, rt.reporter.warn))  # what runs now (down reads its nodes)
        with Signals() as signals:
            return Supervisor(plan, ops, rt, run_dir, opts.exec, signals).run()


def _write_plan(plan: Plan, records: RunRecords) -> None:
    """plan.json / plan.txt in the run directory, secrets masked like `plan` prints them."""
    from glm45_launch.core.render import render

    records.write("plan.json", render(plan, "json"))
    records.write("plan.txt", render(plan, "text"))


def _preflight_phase(plan: Plan, opts: PreflightOptions, run_dir: Path, rt: Runtime,
                     pplan: PreparePlan | None = None) -> PreflightReport:
    """``up``'s first phase: probe, show, save ``preflight.json`` (with ``pplan``: the paths the
    preparation makes may be missing)."""
    from glm45_launch.runtime.preflight_run import report_table
    from glm45_launch.runtime.prepare import excuse_prepared_paths

    if pplan is not None:  # the local copies need rsync on every node
        opts = replace(opts, needs_rsync=True)
    report = preflight(plan, opts, run_dir / "preflight", rt)
    if pplan is not None:
        report = excuse_prepared_paths(report, plan, pplan)
    RunRecords(run_dir, rt.reporter.warn).write_json("preflight.json", report.to_json())
    rt.reporter.show(report_table(report))
    return report


def _prepare_phase(pplan: PreparePlan, run_dir: Path, opts: UpOptions, rt: Runtime) -> RunResult | None:
    """``up --prepare``'s phase before the launch: prepare, save ``prepare.json``; a failure ends the run."""
    from glm45_launch.runtime.prepare import prepare as run_prepare

    result = run_prepare(pplan, rt, run_dir / "prepare", opts.prepare_timeout_s)
    RunRecords(run_dir, rt.reporter.warn).write_json("prepare.json", result.to_json())
    if result.error is None:
        return None
    rt.reporter.table("glm45-launch prepare", [r for r in result.rows() if not r.ok])
    return RunResult(RunState.FAILED, ExitCode.FAILED, cause=Cause(CauseKind.PREPARE_FAILED, result.error),
                     error=f"{result.error}; the cluster was not started")


@dataclass
class DownResult:
    """``down``'s rows, and the hosts the last run started that the hostfile no longer lists."""

    rows: list[Row]
    forgotten: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [r.host for r in self.rows if not r.ok]


def down(hostfile: Hostfile, head: str | None, rt: Runtime, run_dir: Path, *, runs: Path = Path("runs"),
         all_started: bool = False) -> DownResult:
    """``ray stop --force`` on every host at once (the head here when it is this machine, the
    others over SSH); one row per host. A running ``up`` on this head is told first (it ends
    without a restart and says who stopped it). Hosts the last run (``runs/*/plan.json``) started
    that the hostfile no longer lists are named, and stopped with ``all_started``."""
    held = running_up()
    if held is not None:
        request_stop(held, "glm45-launch down")
        rt.reporter.warn(f"`glm45-launch up` (run {held}) is running on this head: told to stop, without a restart")
    head = rt.head_of(hostfile.names, head)
    started = last_started(runs)
    forgotten = [h for h in started if h not in hostfile.names and h != head]
    extra = tuple(forgotten) if all_started else ()
    here = frozenset([head]) if head and rt.here(head) else frozenset()
    steps = build_down_plan(hostfile, head, here, extra)
    runner = rt.steps(run_dir / "down", head, echo=True)  # past 16 hosts, one live progress line
    results = runner.run(steps, timeout_s=60)
    rows = [Row.of(s.host, "ray stop --force" + (" (here)" if runner.runs_here(s) else ""), results[s.host])
            for s in steps]
    if forgotten and not all_started:
        rt.reporter.warn(f"the last run also started Ray on {', '.join(forgotten)}, which the hostfile no longer "
                         "lists: not stopped (--all-started stops them)")
    return DownResult(rows, forgotten)


def last_started(runs: Path) -> list[str]:
    """The nodes of the last run under ``runs`` (its ``plan.json``), [] when there is none."""
    found = [p for p in runs.glob("*/plan.json") if p.is_file()]
    if not found:
        return []
    plan = read_json(max(found, key=lambda p: p.stat().st_mtime))
    cluster = plan.get("cluster") if isinstance(plan, dict) else None
    nodes = cluster.get("nodes") if isinstance(cluster, dict) else None
    return [str(n) for n in nodes] if isinstance(nodes, list) else []


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
    runner = rt.steps(run_dir / "convert", cplan.master_addr, parallel=max(1, len(cplan.steps)), echo=True)
    if not force:
        check = runner.run([cplan.check], timeout_s=60)[cplan.check.host]
        if check.exit_code == 0:
            rt.reporter.ok(cplan.skip_message)
            return ConvertResult(True, [])
    rt.reporter.phase(f"converting {cplan.hf_checkpoint} -> {cplan.save} on {len(cplan.steps)} node(s); "
                      f"logs in {run_dir}")
    results = runner.run(cplan.steps, timeout_s=timeout_s)
    rows = [Row.of(s.host, "convert (here)" if runner.runs_here(s) else "convert", results[s.host])
            for s in cplan.steps]
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
