"""``glm45-launch attach``: follow the current job, across the restarts of a running ``up``."""

from __future__ import annotations

from typing import Any

import click

from glm45_launch.cli.commands.logs import job_from, job_options, job_runtime


@click.command()
@job_options
def attach(**kwargs: Any) -> int:
    """Follow the job's driver log until it ends; exit 0 when it SUCCEEDED.

    While the run's `up` still runs (it may restart the job), the next attempt's job is followed
    too. Ctrl-C detaches: the job keeps running (`glm45-launch stop` stops it).
    """
    from glm45_launch.runtime.jobs import attach as run_attach

    return run_attach(job_from(kwargs), job_runtime(), click.echo)
