"""``glm45-launch collect``: every node's diagnostics and the job's driver log, any time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import (
    PARALLEL,
    PLAN,
    SSH,
    by_name,
    options,
    spec_from_options,
    ssh_from_options,
)


@click.command()
@options(PLAN, SSH, PARALLEL)
@click.option("--job", default=None, help="Whose driver log to keep [default: the last job of the last run].")
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Where `up` wrote its run directories.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to write [default: RUN/diagnostics/collect-<time> of the last run, "
                   "else runs/collect-<time>].")
@options(by_name("collect_timeout", help="At most this long per node."))
def collect(**kwargs: Any) -> int:
    """Collect from every node at once, bounded: the tails of Ray's logs (raylet, GCS, worker errors),
    dmesg (Xid errors), nvidia-smi; and the job's driver log. One summary line per node."""
    from glm45_launch.core.builder import build_plan
    from glm45_launch.core.operations import WatchSettings, build_operations
    from glm45_launch.runtime.diagnostics import collect as run_collect
    from glm45_launch.runtime.jobs import current_job, last_run_dir
    from glm45_launch.runtime.programs import diagnose_program
    from glm45_launch.runtime.rundir import prepare_run_dir
    from glm45_launch.runtime.runtime import Runtime

    plan = build_plan(spec_from_options(kwargs))
    rt = Runtime.real(ssh_from_options(kwargs, plan.cluster.ssh_user), parallel=kwargs["parallel"])
    run = last_run_dir(kwargs["runs"])
    job = kwargs["job"] or current_job(kwargs["runs"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = kwargs["out"] or (run / "diagnostics" / f"collect-{stamp}" if run else kwargs["runs"] / f"collect-{stamp}")
    out = prepare_run_dir(out, "--out")
    ops = build_operations(plan, WatchSettings(collect_timeout_s=kwargs["collect_timeout"]), diagnose_program())
    diag = run_collect(ops, out, job, rt, plan.head)
    missing = [n.host for n in diag.nodes if n.summary is None]
    if missing:
        rt.reporter.warn(f"no evidence from: {', '.join(missing)}")
    rt.reporter.ok(f"diagnostics in {out}")
    return 1 if missing else 0
