"""``glm45-launch up``: run the plan for real (SSH fan-out, a Ray cluster, the job)."""

from __future__ import annotations

from typing import Any

import click

from glm45_launch.cli.options import (
    LAUNCH,
    NETCHECK,
    PARALLEL,
    PLAN,
    PREFLIGHT,
    SSH,
    WATCH,
    options,
    seconds,
    spec_from_options,
    ssh_from_options,
    take,
    watch_from_options,
)
from glm45_launch.errors import LaunchError


@click.command()
@options(PLAN, LAUNCH, SSH, PARALLEL)
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Logs, plan and summary of this run [default: ./runs/<time>].")
@click.option("--serial", is_flag=True, help="Start workers one by one.")
@click.option("--join-timeout", type=seconds(1), default=180.0, show_default=True,
              help="Seconds to wait for every node and GPU to join.")
@click.option("--dry-run", is_flag=True, help="Print the plan and exit: nothing runs.")
@click.option("--force", is_flag=True, help="Launch even when `glm45-launch validate` finds problems.")
@options(PREFLIGHT)
@click.option("--skip-preflight", is_flag=True,
              help="Start without `glm45-launch preflight` (by default up starts nothing if a host fails it).")
@options(WATCH, NETCHECK)
@click.option("--prepare", is_flag=True,
              help="After preflight, run `glm45-launch prepare` first (python profile: downloads, FP8 and torch_dist "
                   "conversion, copies to --model-local-dir; done steps are skipped).")
def up(**kwargs: Any) -> int:
    """Bring up the Ray cluster over SSH and run the training job on the head.

    Run it on the head (MLP_WORKER_0_HOST), like the bash recipe: head-side commands run
    here, worker commands over SSH, in parallel. Exits with the job's outcome.
    """
    from glm45_launch.checks.preflight_report import PreflightOptions
    from glm45_launch.core.builder import build_plan
    from glm45_launch.core.plan_secrets import plan_secrets
    from glm45_launch.core.render import render_text
    from glm45_launch.core.secrets import mask_text
    from glm45_launch.runtime.executor import ExecOptions
    from glm45_launch.runtime.runtime import Runtime
    from glm45_launch.runtime.usecases import UpOptions
    from glm45_launch.runtime.usecases import up as run_up

    spec = spec_from_options(kwargs)
    plan = build_plan(spec)
    watch = watch_from_options(kwargs)
    if kwargs["dry_run"]:
        from glm45_launch.core.operations import build_operations
        from glm45_launch.core.prepare_plan import build_prepare

        click.echo(render_text(plan, ops=build_operations(plan, watch),
                               prepare=build_prepare(plan) if kwargs["prepare"] else None), nl=False)
        return 0
    ssh = ssh_from_options(kwargs, spec.ssh_user)
    # The megatron-core/sglang config checks (~10 s of imports) are `preflight`/`validate`'s.
    checked = take(kwargs, PREFLIGHT)["preflight"]
    checks = None if kwargs["skip_preflight"] else PreflightOptions(parallel=kwargs["parallel"], libs=False,
                                                                    **checked)
    opts = UpOptions(run_dir=kwargs["run_dir"], preflight=checks, watch=watch, force=kwargs["force"],
                     exec=ExecOptions(serial=kwargs["serial"], join_timeout=kwargs["join_timeout"]),
                     prepare=kwargs["prepare"])
    secrets = plan_secrets(plan)
    rt = Runtime.real(ssh, mask=(lambda text: mask_text(text, secrets)) if secrets else None,
                      parallel=kwargs["parallel"])
    result = run_up(plan, opts, rt)
    if spec.no_wait and result.job_id:
        click.echo(result.job_id)  # stdout: for `JOB=$(glm45-launch up --no-wait ...)`
    if result.error:  # the CLI's one error path prints it
        raise LaunchError(result.error, exit_code=int(result.exit_code))
    return int(result.exit_code)
