"""``glm45-launch down``: stop Ray on every host of the hostfile."""

from __future__ import annotations

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
def down(**kwargs: Any) -> int:
    """Stop Ray (`ray stop --force`) on every host, in parallel; one table row per host."""
    from glm45_launch.runtime.rundir import prepare_run_dir
    from glm45_launch.runtime.usecases import Runtime
    from glm45_launch.runtime.usecases import down as run_down

    hosts = take(kwargs, HOSTS)
    hostfile = hostfile_from(hosts["hosts"])
    rt = Runtime.real(ssh_from_options(kwargs, hosts["spec"]["ssh_user"]))
    rows = run_down(hostfile, kwargs["head"] or None, rt, prepare_run_dir(kwargs["run_dir"]), kwargs["parallel"])
    rt.reporter.table("glm45-launch down", rows)
    failed = [r.host for r in rows if not r.ok]
    if failed:
        rt.reporter.error(f"could not stop Ray on: {', '.join(failed)}")
        return 1
    return 0
