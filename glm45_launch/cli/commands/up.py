"""``glm45-launch up``: run the plan for real (SSH fan-out, a Ray cluster, the job)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from glm45_launch.cli.options import PARALLEL, PLAN, SSH, options, spec_from_options, ssh_from_options

if TYPE_CHECKING:
    from glm45_launch.core.operations import WatchSettings
from glm45_launch.errors import PROG

F = Callable[..., Any]
_SECONDS = click.FloatRange(min=0.1)

# The health watch, diagnostics and restarts (core/operations.py WatchSettings), as options.
WATCH_OPTIONS = (
    click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Restart after a node is lost, the job stalls or fails: the cluster again, the same job, "
                      "resumed from --load (needs --checkpoint-dir or a --load in the train args)."),
    click.option("--host-wait", type=_SECONDS, default=600.0, show_default=True, metavar="SECONDS",
                 help="Before a restart, how long a lost node has to answer again."),
    click.option("--health-interval", type=_SECONDS, default=10.0, show_default=True, metavar="SECONDS",
                 help="While the job runs: Ray's node table and `pgrep -x raylet` on every node this often."),
    click.option("--health-timeout", type=_SECONDS, default=10.0, show_default=True, metavar="SECONDS",
                 help="A node whose check does not answer within this, twice in a row, is lost."),
    click.option("--stall-timeout", type=_SECONDS, default=None, metavar="SECONDS",
                 help="No new driver output for this long: the job stalled (default: off)."),
    click.option("--stop-grace", type=_SECONDS, default=30.0, show_default=True, metavar="SECONDS",
                 help="After `ray job stop`, how long before the forced stop (ray stop --force on every node)."),
    click.option("--collect-timeout", type=_SECONDS, default=60.0, show_default=True, metavar="SECONDS",
                 help="Diagnostics after a failure: at most this long per node."),
    click.option("--no-watch", is_flag=True, help="Do not watch the cluster while the job runs."),
    click.option("--no-collect", is_flag=True, help="Collect no diagnostics after a failure."),
)


def watch_options(func: F) -> F:
    for opt in reversed(WATCH_OPTIONS):
        func = opt(func)
    return func


def watch_settings(kwargs: dict[str, Any]) -> WatchSettings:
    """Pop the watch options out of a command's kwargs."""
    from glm45_launch.core.operations import WatchSettings

    return WatchSettings(
        watch=not kwargs.pop("no_watch"), interval_s=kwargs.pop("health_interval"),
        probe_timeout_s=kwargs.pop("health_timeout"), stall_timeout_s=kwargs.pop("stall_timeout"),
        stop_grace_s=kwargs.pop("stop_grace"), max_restarts=kwargs.pop("max_restarts"),
        host_wait_s=kwargs.pop("host_wait"), collect_timeout_s=kwargs.pop("collect_timeout"),
        collect=not kwargs.pop("no_collect"),
    )


@click.command()
@options(PLAN, SSH, PARALLEL)
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Logs, plan and summary of this run [default: ./runs/<time>].")
@click.option("--serial", is_flag=True, help="Start workers one by one.")
@click.option("--join-timeout", type=click.FloatRange(min=1), default=180.0, show_default=True,
              help="Seconds to wait for every node and GPU to join.")
@click.option("--no-wait", is_flag=True, help="Submit the job and print its id (ray job submit --no-wait).")
@click.option("--dry-run", is_flag=True, help="Print the plan and exit: nothing runs.")
@click.option("--force", is_flag=True, help="Launch even when `glm45-launch validate` finds problems.")
@click.option("--no-overlap", is_flag=True,
              help="Start workers only after `ray start --head` returns (the bash recipe's order).")
@click.option("--min-free-gb", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Preflight: free space needed in /tmp (Ray's temp dir) on every host.")
@click.option("--require-gpus", is_flag=True,
              help="Preflight: no nvidia-smi or no NVLink is a failure (default: a warning).")
@click.option("--skip-preflight", is_flag=True,
              help="Start without `glm45-launch preflight` (by default up starts nothing if a host fails it).")
@watch_options
def up(**kwargs: Any) -> int:
    """Bring up the Ray cluster over SSH and run the training job on the head.

    Run it on the head (MLP_WORKER_0_HOST), like the bash recipe: head-side commands run
    here, worker commands over SSH, in parallel. Exits with the job's outcome.
    """
    from glm45_launch.checks.libs import require_sglang_options
    from glm45_launch.checks.preflight_report import PreflightOptions
    from glm45_launch.checks.rules import require_valid
    from glm45_launch.core.plan import build_plan
    from glm45_launch.core.render import render_text
    from glm45_launch.core.secrets import mask_text, plan_secrets
    from glm45_launch.runtime.usecases import Runtime, UpOptions
    from glm45_launch.runtime.usecases import up as run_up

    spec = replace(spec_from_options(kwargs), no_wait=kwargs["no_wait"], overlap=not kwargs["no_overlap"])
    plan = build_plan(spec)
    watch = watch_settings(kwargs)
    if kwargs["dry_run"]:
        from glm45_launch.core.operations import build_operations

        click.echo(render_text(plan, ops=build_operations(plan, watch)), nl=False)
        return 0
    # What `plan` would say (the dashboard exposure, the checkpoint quirk...) before anything runs.
    secrets = plan_secrets(plan)
    for note in plan.notes:
        click.echo(f"{PROG}: note: {mask_text(note, secrets)}", err=True)
    for warning in plan.warnings:
        click.echo(f"{PROG}: warning: {mask_text(warning, secrets)}", err=True)
    # Invalid configs die here in milliseconds, not ten minutes into the job.
    for problem in require_valid(plan, force=kwargs["force"]) + require_sglang_options(plan, kwargs["force"]):
        click.echo(f"{PROG}: warning: invalid config (--force): {problem.message}", err=True)
    ssh = ssh_from_options(kwargs, spec.ssh_user)
    # The megatron-core/sglang config checks (~10 s of imports) are `preflight`/`validate`'s.
    checks = None if kwargs["skip_preflight"] else PreflightOptions(
        parallel=kwargs["parallel"], libs=False, min_free_gb=kwargs["min_free_gb"],
        require_gpus=kwargs["require_gpus"])
    opts = UpOptions(run_dir=kwargs["run_dir"], parallel=kwargs["parallel"], serial=kwargs["serial"],
                     join_timeout=kwargs["join_timeout"], preflight=checks, watch=watch)
    rt = Runtime.real(ssh, mask=(lambda text: mask_text(text, secrets)) if secrets else None)
    result = run_up(plan, opts, rt)
    if spec.no_wait and result.job_id:
        click.echo(result.job_id)  # stdout: for `JOB=$(glm45-launch up --no-wait ...)`
    return int(result.exit_code)
