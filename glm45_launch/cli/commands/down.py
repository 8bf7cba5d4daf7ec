"""``glm45-launch down``: stop Ray on every host of the hostfile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import (
    HOSTS,
    PARALLEL,
    SSH,
    by_name,
    hostfile_from,
    options,
    ssh_from_options,
    take,
)


@click.command()
@options(HOSTS, by_name("head", help="Also stop the head here when it is this machine and not in the hostfile."),
         SSH, PARALLEL)
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where the per-host logs go [default: ./runs/<time>].")
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Where `up` wrote its runs: hosts the last one started are compared with the hostfile.")
@click.option("--all-started", is_flag=True,
              help="Also stop the hosts the last run started that the hostfile no longer lists.")
def down(**kwargs: Any) -> int:
    """Stop Ray (`ray stop --force`) on every host, in parallel; one table row per host. The head
    stops here when it is this machine. A running `up` is told first: it ends without a restart."""
    from glm45_launch.runtime.rundir import prepare_run_dir
    from glm45_launch.runtime.runtime import Runtime
    from glm45_launch.runtime.usecases import down as run_down

    hosts = take(kwargs, HOSTS)
    hostfile = hostfile_from(hosts["hosts"])
    rt = Runtime.real(ssh_from_options(kwargs, hosts["spec"]["ssh_user"]), parallel=kwargs["parallel"])
    result = run_down(hostfile, kwargs["head"] or None, rt, prepare_run_dir(kwargs["run_dir"]), runs=kwargs["runs"],
                      all_started=kwargs["all_started"])
    rt.reporter.table("glm45-launch down", result.rows)
    if result.failed:
        rt.reporter.error(f"could not stop Ray on: {', '.join(result.failed)}")
        return 1
    return 0
