"""``netcheck`` as a use case: the plan's launch steps up to the submit (the cluster up as ``up``
brings it, or the running one with ``--external-ray``, then the check), through the same
executor; then Ray stopped through the one stop path unless ``keep_cluster``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm45_launch.core.operations import WatchSettings, build_operations
from glm45_launch.core.plan import Plan
from glm45_launch.core.steps import NetcheckStep, SubmitStep
from glm45_launch.errors import ExitCode, LaunchError
from glm45_launch.runtime.causes import Cause, CauseKind
from glm45_launch.runtime.diagnostics import collect
from glm45_launch.runtime.executor import ExecOptions, Executor, require_head_here
from glm45_launch.runtime.interfaces import Row
from glm45_launch.runtime.lock import head_lock
from glm45_launch.runtime.records import RunRecords
from glm45_launch.runtime.rundir import prepare_run_dir
from glm45_launch.runtime.runtime import Runtime
from glm45_launch.runtime.signals import Signals
from glm45_launch.runtime.stopping import Stopper


@dataclass
class NetcheckOptions:
    run_dir: Path | str | None = None
    exec: ExecOptions = field(default_factory=ExecOptions)
    keep_cluster: bool = False  # leave Ray running afterwards (a cluster it did not start is always left)
    watch: WatchSettings = field(default_factory=WatchSettings)  # diagnostics after a failure
    lock_path: Path | None = None


@dataclass
class NetcheckResult:
    report: dict[str, Any] | None
    cause: Cause | None
    run_dir: Path
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.cause is None and bool(self.report and self.report.get("ok"))

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK if self.ok else ExitCode.FAILED)

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.cause) if self.cause else "netcheck failed"


def netcheck(plan: Plan, opts: NetcheckOptions, rt: Runtime) -> NetcheckResult:
    """Bring the cluster up (or use the running one), run the plan's check, stop what it started."""
    from glm45_launch.core.render import render
    from glm45_launch.runtime.programs import diagnose_program

    if plan.step(NetcheckStep.kind) is None:
        raise LaunchError("the plan has no network check (--no-netcheck?)")
    ops = build_operations(plan, opts.watch, diagnose_program())
    require_head_here(plan, rt)
    run_dir = prepare_run_dir(opts.run_dir)
    with head_lock(run_dir, opts.lock_path):
        records = RunRecords(run_dir, rt.reporter.warn)
        records.write("plan.json", render(plan, "json"))  # what runs now (down reads its nodes)
        rt.reporter.phase(f"run directory: {run_dir}")
        with Signals() as signals:
            stopper = Stopper(ops, rt, records, signals, plan.head)
            ex = Executor(plan, ops, rt, records, opts.exec, threading.Event())
            try:
                launch = ex.launch(until=SubmitStep.kind)
            except KeyboardInterrupt:
                ex.abort()
                if ex.started:
                    stopper.stop("interrupted: nothing left half-started", hosts=ex.started, fresh=True)
                return NetcheckResult(ex.netcheck, Cause(CauseKind.INTERRUPTED, "interrupted"), run_dir, ex.rows)
            finally:
                ex.release()
            rt.reporter.table("glm45-launch netcheck", ex.rows)
            if launch.cause is not None and opts.watch.collect:
                collect(ops, run_dir / "diagnostics", None, rt, plan.head)
            if ex.started and not opts.keep_cluster:
                stopper.stop("the check is over (--keep-cluster leaves it running)", hosts=ex.started)
            elif ex.started:
                rt.reporter.warn(f"Ray left running on {len(ex.started)} node(s) (--keep-cluster; "
                                 "`glm45-launch down` stops it)")
    return NetcheckResult(ex.netcheck, launch.cause, run_dir, ex.rows)
