"""``glm45-launch preflight``: check every host is ready for the plan; starts nothing."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import (
    PARALLEL,
    PLAN,
    PREFLIGHT,
    SSH,
    options,
    output_format,
    spec_from_options,
    ssh_from_options,
    take,
)


@click.command()
@options(PLAN, SSH, PARALLEL)
@options(PREFLIGHT)
@click.option("--no-libs", is_flag=True, help="Skip the megatron-core/sglang checks on the head.")
@click.option("--import-all", is_flag=True, help="Import torch and the framework with the job's runtime env too, "
              "not only locate them (torch's import costs seconds per node).")
@click.option("--needs-rsync", is_flag=True, help="Also check `rsync --version` on every node (prepare copies "
              "the checkpoints to each node with it).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where the per-host probe logs go [default: a new temp dir].")
@output_format()
def preflight(**kwargs: Any) -> int:
    """Check every host over SSH, in parallel, before `up`: one row per host.

    SSH reachable (host key, auth); python3, the `ray` first on PATH, torch, sglang and
    megatron-core at the head's versions; GPU count and NVLink (nvidia-smi); the train
    args' checkpoint and data paths; the socket interface; every ${VAR} of the runtime
    env set in the host's ssh session; free space in /tmp; `python3 -c 'import ray'` with the
    job's runtime env applied (its PYTHONPATH replaces the node's; torch and the framework
    located, or imported with --import-all); the
    processes that the kill commands before `ray start` (`pkill -9 python`) would hit but Ray
    did not start (a warning); one machine behind two hostfile lines (hostname, machine-id,
    boot id). On the head: the Ray and
    dashboard ports (a holder that is not Ray fails: the cleanup would not free it), the
    entry script, and the megatron-core/sglang config checks. The head is probed here, not
    over SSH, when it is this machine or not in the hostfile. Exit 0 when nothing failed.
    """
    from glm45_launch.checks.preflight_report import PreflightOptions
    from glm45_launch.core.builder import build_plan
    from glm45_launch.errors import LaunchError
    from glm45_launch.runtime.preflight_run import report_table
    from glm45_launch.runtime.rundir import prepare_run_dir
    from glm45_launch.runtime.runtime import Runtime
    from glm45_launch.runtime.usecases import preflight as run_preflight

    spec = spec_from_options(kwargs)
    plan = build_plan(spec)
    rt = Runtime.real(ssh_from_options(kwargs, spec.ssh_user), parallel=kwargs["parallel"])
    opts = PreflightOptions(parallel=kwargs["parallel"], libs=not kwargs["no_libs"], needs_rsync=kwargs["needs_rsync"],
                            import_all=kwargs["import_all"],
                            **take(kwargs, PREFLIGHT)["preflight"])
    logs = prepare_run_dir(kwargs["run_dir"]) if kwargs["run_dir"] else Path(tempfile.mkdtemp(prefix="glm45-preflight-"))
    report = run_preflight(plan, opts, logs, rt)
    if kwargs["fmt"] == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        rt.reporter.show(report_table(report))
    if not report.ok:
        raise LaunchError(f"preflight failed: {report.summary()} (probe logs in {logs})", exit_code=1)
    return 0
