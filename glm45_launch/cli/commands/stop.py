"""``glm45-launch stop [JOB]``: stop the job gracefully, from any shell on the head."""

from __future__ import annotations

from typing import Any

import click

from glm45_launch.cli.commands.logs import job_from, job_options, job_runtime


@click.command()
@job_options
def stop(**kwargs: Any) -> int:
    """Stop the job (`ray job stop`: SIGTERM, then Ray's SIGKILL). A running `up` does not restart
    a job stopped this way; the cluster stays up (`glm45-launch down` stops it)."""
    from glm45_launch.runtime.jobs import stop as stop_job

    return stop_job(job_from(kwargs), job_runtime())
