"""``glm45-launch logs [JOB] [--follow]``: the job's driver log, from any shell on the head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import utf8_text

F = Callable[..., Any]

JOB_OPTIONS = (
    click.argument("job", required=False, callback=utf8_text),
    click.option("--run-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                 help="The run whose job (its last) to use [default: the last run under --runs]."),
    click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                 show_default=True, help="Where `up` wrote its run directories."),
    click.option("--address", default=None, metavar="URL", callback=utf8_text,
                 help="Job server URL [default: the run's plan.json, else http://127.0.0.1:8265]."),
)


def job_options(func: F) -> F:
    """JOB, --run-dir, --runs, --address: which job (default: the last job of the last run)."""
    for opt in reversed(JOB_OPTIONS):
        func = opt(func)
    return func


def job_from(kwargs: dict[str, Any]) -> Any:
    """The job the options name (checked with its job server by the use case)."""
    from glm45_launch.runtime.jobs import find_job

    return find_job(kwargs["job"], kwargs["run_dir"], kwargs["runs"], kwargs["address"])


def job_runtime() -> Any:
    """This machine and its Ray: what logs/attach/stop need (no SSH is used)."""
    from glm45_launch.runtime.runtime import Runtime
    from glm45_launch.runtime.ssh import SshOptions

    return Runtime.real(SshOptions())


@click.command()
@job_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
def logs(**kwargs: Any) -> int:
    """Print the job's driver log (`ray job logs`) on stdout."""
    from glm45_launch.runtime.jobs import logs as job_logs

    return job_logs(job_from(kwargs), job_runtime(), click.echo, follow=kwargs["follow"])
