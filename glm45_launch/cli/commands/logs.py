"""``glm45-launch logs [JOB] [--follow]``: the job's driver log, from any shell on the head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import utf8_text
from glm45_launch.errors import ExitCode, LaunchError

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
    """The job the options name, once its job server has said it knows it: no job server
    answering, or no such job there, is one line (before any ``ray job`` command runs)."""
    from glm45_launch.runtime.jobs import find_job
    from glm45_launch.runtime.ray_api import JobServerTimeout, RayClient

    ref = find_job(kwargs["job"], kwargs["run_dir"], kwargs["runs"], kwargs["address"])
    try:
        RayClient().job_status(ref.address, ref.job_id)
        exc: Exception | None = None
    except JobServerTimeout as timeout:
        raise LaunchError(str(timeout), ExitCode.FAILED) from None
    except Exception as other:  # noqa: BLE001 - the job SDK's errors are mapped below
        exc = other
    if isinstance(exc, ConnectionError):
        raise LaunchError(f"no Ray job server answers at {ref.address} (is the cluster up? --address names "
                          "another)", ExitCode.FAILED)
    if isinstance(exc, ValueError):
        raise LaunchError(f"job server address {ref.address!r}: {exc}")
    if exc is not None:
        text = str(exc)
        if "404" in text or "does not exist" in text:
            raise LaunchError(f"job {ref.job_id}: no such job at {ref.address}")
        raise LaunchError(f"job server at {ref.address}: {type(exc).__name__}: {text}", ExitCode.FAILED)
    return ref


def current_job(runs: Path) -> str | None:
    """The last job of the last run under ``runs`` (what logs/attach/stop default to), or None."""
    from glm45_launch.runtime.jobs import find_job

    try:
        return find_job(runs=runs).job_id
    except LaunchError:
        return None


@click.command()
@job_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
def logs(**kwargs: Any) -> int:
    """Print the job's driver log (`ray job logs`) on stdout."""
    from glm45_launch.runtime.jobs import logs as job_logs
    from glm45_launch.runtime.local import LocalRunner

    ref = job_from(kwargs)
    return job_logs(ref, LocalRunner(), click.echo, follow=kwargs["follow"])
