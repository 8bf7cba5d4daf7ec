"""``glm45-launch attach``: follow the current job, across the restarts of a running ``up``."""

from __future__ import annotations

from typing import Any

import click

from glm45_launch.cli.commands.logs import job_from, job_options


@click.command()
@job_options
def attach(**kwargs: Any) -> int:
    """Follow the job's driver log until it ends; exit 0 when it SUCCEEDED.

    While the run's `up` still runs (it may restart the job), the next attempt's job is followed
    too. Ctrl-C detaches: the job keeps running (`glm45-launch stop` stops it).
    """
    from glm45_launch.runtime.jobs import attach as run_attach
    from glm45_launch.runtime.local import LocalRunner
    from glm45_launch.runtime.ray_api import RayClient
    from glm45_launch.runtime.reporter import RichReporter

    ref = job_from(kwargs)
    reporter = RichReporter()
    try:
        return run_attach(ref, LocalRunner(), RayClient(), reporter, click.echo)
    except KeyboardInterrupt:
        reporter.warn(f"detached; job {ref.job_id} keeps running (`glm45-launch stop` stops it)")
        return 0
